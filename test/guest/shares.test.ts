import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { resolveShares, type ShareDecl } from '../../src/guest/shares.js';
import { tempDir } from '../helpers/env.js';

const who = { user: 'ada', sessionId: '0123456789ab', machine: 'demo' };
const decl = (p: string, extra: Partial<ShareDecl> = {}): ShareDecl => ({ path: p, tag: 'data', readonly: true, required: true, ...extra });

function tree(t: import('ava').ExecutionContext) {
  const dir = tempDir(t);
  const root = path.join(dir, 'data');
  fs.mkdirSync(path.join(root, 'ada'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'secret'));
  fs.symlinkSync(path.join(dir, 'secret'), path.join(root, 'escape'));
  fs.symlinkSync(path.join(root, 'ada'), path.join(root, 'alias'));
  fs.writeFileSync(path.join(root, 'file.txt'), 'x');
  return { dir, root };
}

test('@USER@ is substituted and the folder resolved inside its root', (t) => {
  const { root } = tree(t);
  t.deepEqual(resolveShares([decl(`${root}/@USER@`)], [root], who), [{ path: fs.realpathSync(path.join(root, 'ada')), tag: 'data', readonly: true }]);
  t.is(resolveShares([decl(`${root}/alias`, { readonly: false })], [root], who)[0]!.path, fs.realpathSync(path.join(root, 'ada')), 'symlinks inside the root are fine');
});

test('escapes are refused: "..", symlinks out of the root, paths outside every root', (t) => {
  const { dir, root } = tree(t);
  t.throws(() => resolveShares([decl(`${root}/../secret`)], [root], who), { message: /must not contain "\.\."/ });
  t.throws(() => resolveShares([decl(`${root}/escape`)], [root], who), { message: /outside the allowed roots/ });
  t.throws(() => resolveShares([decl(`${dir}/secret`)], [root], who), { message: /outside the allowed roots/ });
  t.throws(() => resolveShares([decl(`${root}/ada`)], [], who), { message: /none configured/ });
  t.throws(() => resolveShares([decl('relative/path')], [root], who), { message: /absolute path/ });
});

test('missing folders: an error when required, skipped otherwise; files are not folders; tags are unique', (t) => {
  const { root } = tree(t);
  t.throws(() => resolveShares([decl(`${root}/nobody`)], [root], who), { message: /does not exist; ask the administrators/ });
  t.deepEqual(resolveShares([decl(`${root}/nobody`, { required: false })], [root], who), []);
  t.throws(() => resolveShares([decl(`${root}/file.txt`)], [root], who), { message: /not a directory/ });
  t.throws(() => resolveShares([decl(`${root}/ada`), decl(`${root}/alias`)], [root], who), { message: /mount tag "data"/ });
});

test('a user name cannot smuggle a path into @USER@', (t) => {
  const { root } = tree(t);
  t.throws(() => resolveShares([decl(`${root}/@USER@`)], [root], { ...who, user: '../secret' }), { message: /unsafe user/ });
});
