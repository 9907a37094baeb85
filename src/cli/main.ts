// Process entry for bin/qwdctl.
import { run } from './qwdctl.js';

run(process.argv.slice(2)).then((code) => {
  // `serve` never resolves; every other command ends here.
  process.exitCode = code;
});
