import { assert } from "../assert.ts";
import { runDeno } from "../task_runner.ts";
import { torchAvailable } from "../reference/torch.ts";

Deno.test({
  name: "bench/knn_bench.ts at tiny sizes: three classifiers agree, the streamed bank runs",
  ignore: !torchAvailable(),
  async fn() {
    const { code, stdout, stderr } = await runDeno([
      ...["run", "-A", "bench/knn_bench.ts"],
      ...[
        "--train",
        "1500",
        "--test",
        "200",
        "--dim",
        "16",
        "--bank",
        "40000",
        "--bank_test",
        "50",
      ],
    ]);
    assert.equal(code, 0, `${stdout}\n${stderr}`);
    for (const name of ["JS classifier", "PyTorch official", "PyTorch equal work"]) {
      assert.match(stdout, new RegExp(`ours vs ${name}: largest difference [\\d.]+ points: agree`));
    }
    assert.match(stdout, /^ours 20-NN: Top1 \d+\.\d\d, Top5 \d+\.\d\d$/m);
    assert.match(stdout, /^streamed bank: 40000 rows .*, 50 test rows: /m);
    assert.match(stdout, /^peak RSS of this process: [\d.]+ GiB \(limit 4 GiB: within\)$/m);
  },
});
