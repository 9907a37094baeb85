// Process entry for bin/qwdctl.
import { run } from './qwdctl.js';

// run() reports its own errors as exit codes; anything else it throws is left to
// Node, which prints it and exits with 1.
void run(process.argv.slice(2)).then((code) => {
  // `serve` never resolves; every other command ends here.
  process.exitCode = code;
});
