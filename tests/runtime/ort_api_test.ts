/**
 * The C API table: it loads onnxruntime-node's core library, its entries are the functions their
 * names say (checked by calling them), and failures are one sentence.
 */

import * as ort from "onnxruntime-node";
import { join } from "node:path";
import { assert } from "../assert.ts";
import { cString, ORT_API_VERSION, OrtApi, ortApi } from "../../lib/runtime/ort_api.ts";
import { OrtSession } from "../../lib/runtime/ort_session.ts";

/** `OrtErrorCode` ORT_INVALID_ARGUMENT. */
const INVALID_ARGUMENT = 2;

Deno.test("the core library is onnxruntime-node's, loaded once", () => {
  const api = ortApi();
  assert.equal(api.version, ort.env.versions.common);
  assert(Number(api.version.split(".")[1]) >= ORT_API_VERSION, api.version);
  assert.equal(ortApi(), api);
  assert.equal(api.libraryDir, join(api.libraryPath, ".."));
});

Deno.test("status entries round-trip: CreateStatus, GetErrorCode, GetErrorMessage", () => {
  const { fn } = ortApi();
  const status = fn.CreateStatus.call(INVALID_ARGUMENT, cString("a made-up failure"));
  assert.notEqual(status, null);
  assert.equal(fn.GetErrorCode.call(status), INVALID_ARGUMENT);
  assert.equal(
    Deno.UnsafePointerView.getCString(fn.GetErrorMessage.call(status)!),
    "a made-up failure",
  );
  fn.ReleaseStatus.call(status);
});

Deno.test("a failed status is one sentence naming the call, and is released", () => {
  const api = ortApi();
  assert.doesNotThrow(() => api.check("Nothing", null));
  assert.equal(api.failure(null), undefined);
  const status = api.fn.CreateStatus.call(INVALID_ARGUMENT, cString("first line.\n  second line."));
  assert.throws(
    () => api.check("SomeCall", status),
    /^Error: onnxruntime's SomeCall failed: first line\. second line$/,
  );
});

Deno.test("a real failing call reports onnxruntime's message", async () => {
  const api = ortApi();
  const error = await OrtSession.create(api, cString("not a model"), { device: "cpu" }).then(
    () => undefined,
    (e: Error) => e,
  );
  assert(error instanceof Error, "garbage bytes are refused");
  assert.match(error.message, /^onnxruntime's CreateSessionFromArray failed: \S.*protobuf/i);
  assert.doesNotMatch(error.message, /\n/);
});

Deno.test("a missing core library is one sentence naming the path and what to do", () => {
  const dir = Deno.makeTempDirSync();
  const path = join(dir, "libonnxruntime.so.1");
  assert.throws(
    () => OrtApi.load(path),
    (e: Error) =>
      e.message.startsWith(`cannot load the onnxruntime core library ${path} (`) &&
      e.message.includes(`run "deno install"`) && !e.message.includes("\n"),
  );
  Deno.removeSync(dir);
});
