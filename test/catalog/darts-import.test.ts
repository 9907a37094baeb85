// DARTS machines.conf import: the pure conversion (src/catalog/darts-import.ts).
import test from 'ava';
import { importDartsMachines, isPlainFileName } from '../../src/catalog/darts-import.js';

test('only plain file names are accepted as image names', (t) => {
  for (const ok of ['debian11.qcow2', 'fine image.qcow2', 'DSL-4.4.10.iso', 'a.b-c_d']) t.true(isPlainFileName(ok), ok);
  for (const bad of ['', '.', '..', '../x.qcow2', 'a/b.qcow2', '/etc/passwd', '..\\x', 'a\\b', 'a\0b', '.hidden', 'x..y', 'tab\there', 'x'.repeat(256)]) t.false(isPlainFileName(bad), JSON.stringify(bad));
});

test('a url whose decoded last segment is a path is skipped with a warning naming the section', (t) => {
  const { machines, warnings } = importDartsMachines('[evil]\nurl: http://mirror.example.org/a/..%2F..%2F..%2Fetc%2Fcron.d%2Fx\n[ok]\nurl: http://mirror.example.org/a/ok.qcow2\n', 'm.conf', 'images');
  t.deepEqual(machines.map((m) => m.descriptor.image), ['images/ok.qcow2']);
  t.deepEqual(warnings, ['m.conf: [evil] image file name "../../../etc/cron.d/x" taken from the url is not a plain file name (no "/", "\\", "..", NUL or leading "."); skipped']);
});

test('an explicit absolute file is kept as the admin wrote it, a relative path is refused', (t) => {
  const { machines, warnings } = importDartsMachines('[win]\nfile = /srv/vm/win10.qcow2\n[rel]\nfile = sub/../../x.qcow2\n', 'm.conf');
  t.deepEqual(machines.map((m) => m.descriptor.image), ['/srv/vm/win10.qcow2']);
  t.is(warnings.length, 1);
  t.regex(warnings[0]!, /^m\.conf: \[rel\] file "sub\/\.\.\/\.\.\/x\.qcow2" is neither an absolute path nor a plain file name/);
});
