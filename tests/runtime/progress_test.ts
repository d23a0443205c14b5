import { assert } from "../assert.ts";
import { formatDuration, formatRate, Progress, progressLine } from "../../lib/runtime/progress.ts";

/** A clock the test moves by hand, in milliseconds. */
function manualClock(): { now: () => number; advance: (seconds: number) => void } {
  let ms = 1000;
  return { now: () => ms, advance: (seconds) => ms += seconds * 1000 };
}

Deno.test("Progress: one line per interval with done/total, mean rate and time left", () => {
  const clock = manualClock();
  const lines: string[] = [];
  const progress = new Progress({
    label: "train features",
    write: (line) => lines.push(line),
    intervalSeconds: 5,
    now: clock.now,
  });
  clock.advance(2);
  progress.update(128, 1000);
  assert.deepEqual(lines, [], "no line before the interval has passed");
  clock.advance(3);
  progress.update(256, 1000);
  // 256 images in 5 s: 51.2 images/s; 744 images left take 14.53 s.
  assert.deepEqual(lines, ["train features: 256/1000 images (25%), 51.2 images/s, 15 s left"]);
  clock.advance(4.9);
  progress.update(384, 1000);
  assert.equal(lines.length, 1, "the next line waits a full interval after the previous one");
  clock.advance(0.1);
  progress.update(500, 1000);
  // 500 in 10 s: 50 images/s, 500 left: 10 s.
  assert.equal(lines[1], "train features: 500/1000 images (50%), 50.0 images/s, 10 s left");
  clock.advance(10);
  progress.update(1000, 1000);
  progress.finish();
  assert.equal(lines[2], "train features: 1000/1000 images (100%), 50.0 images/s, 0 s left");
  assert.equal(lines[3], "train features: 1000 images in 20 s (50.0 images/s)");
});

Deno.test("Progress: the unit is named; without a writer nothing is printed", () => {
  const clock = manualClock();
  const lines: string[] = [];
  const epochs = new Progress({
    label: "linear classifiers",
    unit: "epochs",
    write: (line) => lines.push(line),
    now: clock.now,
  });
  clock.advance(400);
  epochs.update(8, 100);
  assert.deepEqual(lines, [
    "linear classifiers: 8/100 epochs (8%), 0.0200 epochs/s, 1 h 17 min left",
  ]);
  const silent = new Progress({ label: "quiet", now: clock.now });
  clock.advance(60);
  silent.update(5, 10);
  silent.finish();
  assert.equal(lines.length, 1);
});

Deno.test("progressLine: before any unit is done the time left is unknown", () => {
  assert.equal(
    progressLine("k-NN", 0, 10000, "test images", 7),
    "k-NN: 0/10000 test images (0%), time left unknown",
  );
  assert.equal(progressLine("x", 3, 0, "images", 0), "x: 3/0 images (100%), time left unknown");
  // 1 of 3 in 2 s: 0.5/s, 2 left: 4 s; the percentage rounds down.
  assert.equal(
    progressLine("x", 1, 3, "images", 2),
    "x: 1/3 images (33%), 0.500 images/s, 4 s left",
  );
});

Deno.test("formatDuration and formatRate", () => {
  assert.equal(formatDuration(0), "0 s");
  assert.equal(formatDuration(59.4), "59 s");
  assert.equal(formatDuration(59.6), "1 min 00 s");
  assert.equal(formatDuration(185), "3 min 05 s");
  assert.equal(formatDuration(3599.4), "59 min 59 s");
  assert.equal(formatDuration(3600), "1 h 00 min");
  assert.equal(formatDuration(2 * 3600 + 7 * 60 + 20), "2 h 07 min");
  assert.equal(formatRate(1234.4), "1234");
  assert.equal(formatRate(78.94), "78.9");
  assert.equal(formatRate(4.567), "4.57");
  assert.equal(formatRate(0.12345), "0.123");
});

Deno.test("Progress: a non-positive interval is refused", () => {
  assert.throws(
    () => new Progress({ label: "x", intervalSeconds: 0 }),
    /progress interval must be positive, got 0/,
  );
});
