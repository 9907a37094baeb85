// The parts of the Debian package bin/build-deb renders from the project's own sources: the
// packaged config (the example with the package's paths, every comment kept, valid for the
// real config parser), qwdctl(1) from qwdctl's commander help, and the DEP-5 copyright file.
// Pure functions on real inputs (the real example config, the real qwdctl program).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { parse as parseYaml } from 'yaml';
import { ROOT, tempDir } from '../helpers/env.js';
import { parseConfig } from '../../src/config/schema.js';
import { buildProgram } from '../../src/cli/qwdctl.js';
import {
  PACKAGE_PATHS, PACKAGED_EXAMPLE, PUBLISHING_BLOCK, renderCopyright, renderManPage, renderPackagedConfig, roffEscape,
} from '../../etc/debian/build-helpers.js';

const EXAMPLE = fs.readFileSync(path.join(ROOT, 'etc', 'qemu-web-desktop', 'config.example.yml'), 'utf8');

test('the packaged config holds only the package values and no guest network, and it validates', (t) => {
  const text = renderPackagedConfig(EXAMPLE);
  const { config, problems } = parseConfig(parseYaml(text), '/etc/qemu-web-desktop/config.yml', '/etc/qemu-web-desktop');
  t.deepEqual(problems, []);
  t.is(config!.stateDir, PACKAGE_PATHS.stateDir);
  t.is(config!.machinesDir, PACKAGE_PATHS.machinesDir);
  t.is(config!.qemu.network, 'none');
  t.is(config!.listen.host, '127.0.0.1', 'still loopback only');
  // A conffile: short, so that a comment changed in the example never makes dpkg prompt a site.
  t.deepEqual(Object.keys(parseYaml(text) as object), ['stateDir', 'machinesDir', 'qemu']);
  t.deepEqual(Object.keys((parseYaml(text) as { qemu: object }).qemu), ['network']);
  t.true(text.length < 3000, `short: ${text.length} characters`);
  t.true(text.includes(PACKAGED_EXAMPLE), 'it points to the full example');
  t.regex(text, /^# \/etc\/qemu-web-desktop\/config\.yml — installed by the Debian package/);
});

test('the packaged config\'s commented publishing block is a valid config once uncommented', (t) => {
  const text = renderPackagedConfig(EXAMPLE);
  t.true(PUBLISHING_BLOCK.every((l) => text.includes(l)));
  // The lines after the block's lone "#" are YAML; those before it, prose.
  const yamlLines: readonly string[] = PUBLISHING_BLOCK.slice(PUBLISHING_BLOCK.indexOf('#') + 1);
  const uncommented = text.split('\n').map((l) => (yamlLines.includes(l) ? l.slice(2) : l)).join('\n');
  const doc = parseYaml(uncommented) as Record<string, unknown>;
  t.deepEqual(Object.keys(doc), ['stateDir', 'machinesDir', 'qemu', 'publicUrl', 'trustProxy', 'auth']);
  const { config, problems } = parseConfig(doc, '/etc/qemu-web-desktop/config.yml', '/etc/qemu-web-desktop');
  t.deepEqual(problems, []);
  t.is(config!.publicUrl, 'https://desktops.example.org');
  t.deepEqual(config!.auth.backends.map((b) => b.type), ['local']);
});

test('the packaged config refuses an example that no longer has a key the package sets', (t) => {
  t.throws(() => renderPackagedConfig(EXAMPLE.replace(/^stateDir: .*$/m, '')), {
    message: /config\.example\.yml has no key stateDir/,
  });
  t.throws(() => renderPackagedConfig(EXAMPLE.replace(/^ {2}network: .*$/m, '')), {
    message: /config\.example\.yml has no key qemu\.network/,
  });
});

test('roff escaping keeps hyphens, backslashes and leading dots literal', (t) => {
  t.is(roffEscape('--json'), '\\-\\-json');
  t.is(roffEscape('a\\b'), 'a\\eb');
  t.is(roffEscape('.TH not a macro'), '\\&.TH not a macro');
  t.is(roffEscape("'quote"), "\\&'quote");
});

test('the man page lists every qwdctl command and option that qwdctl --help shows', (t) => {
  const { program } = buildProgram();
  const page = renderManPage(program, '9.9.9', '2026-01-02');
  t.regex(page, /^\.TH QWDCTL 1 "2026-01-02" "qemu-web-desktop 9\.9\.9" "User Commands"$/m);
  const walk = (cmd: typeof program, prefix: string): void => {
    for (const sub of cmd.commands) {
      if (sub.name() === 'help') continue;
      const name = `${prefix} ${sub.name()}`;
      t.true(page.includes(`.B ${roffEscape(name)}`), `the page has ${name}`);
      for (const option of sub.options) {
        t.true(page.includes(roffEscape(option.flags)), `${name} ${option.flags}`);
      }
      walk(sub, name);
    }
  };
  walk(program, 'qwdctl');
  t.false(/^\.B qwdctl help/m.test(page), 'commander\'s help command is left out');
});

test('the copyright file names each bundled package with the licence its package.json declares', (t) => {
  const dir = tempDir(t);
  const write = (rel: string, pkg: object) => {
    fs.mkdirSync(path.join(dir, rel), { recursive: true });
    fs.writeFileSync(path.join(dir, rel, 'package.json'), JSON.stringify(pkg));
  };
  write('node_modules/plain', { name: 'plain', version: '1.0.0', license: 'MIT' });
  write('node_modules/@scope/old', { name: '@scope/old', version: '2.0.0', license: { type: 'BSD-3-Clause' } });
  write('node_modules/plain/node_modules/older', { name: 'older', version: '0.1.0', licenses: [{ type: 'MIT' }, { type: 'Apache-2.0' }] });
  const text = renderCopyright('EUPL-1.2', '2025-2026', dir,
    ['node_modules/plain', 'node_modules/@scope/old', 'node_modules/plain/node_modules/older']);
  t.regex(text, /^Format: https:\/\/www\.debian\.org\/doc\/packaging-manuals\/copyright-format\/1\.0\/$/m);
  t.regex(text, /^Files: \*\nCopyright: 2025-2026 the qemu-web-desktop authors\nLicense: EUPL-1\.2$/m);
  t.regex(text, /^Files: usr\/lib\/qemu-web-desktop\/node_modules\/plain\/\*\nCopyright: the authors of plain 1\.0\.0\nLicense: MIT$/m);
  t.regex(text, /node_modules\/@scope\/old\/\*\nCopyright: the authors of @scope\/old 2\.0\.0\nLicense: BSD-3-Clause$/m);
  t.regex(text, /node_modules\/plain\/node_modules\/older\/\*\n.*\nLicense: MIT or Apache-2\.0$/m);
});

test('the copyright file refuses a bundled package that declares no licence, naming it', (t) => {
  const dir = tempDir(t);
  const write = (rel: string, pkg: object) => {
    fs.mkdirSync(path.join(dir, rel), { recursive: true });
    fs.writeFileSync(path.join(dir, rel, 'package.json'), JSON.stringify(pkg));
  };
  write('node_modules/plain', { name: 'plain', version: '1.0.0', license: 'MIT' });
  write('node_modules/none', { name: 'none', version: '3.0.0' });
  write('node_modules/odd', { name: 'odd', version: '1.0.0', licenses: [{ url: 'https://example.org' }] });
  t.throws(() => renderCopyright('EUPL-1.2', '2026', dir, ['node_modules/plain', 'node_modules/none']), {
    message: /node_modules\/none\/package\.json declares no usable licence \("unknown"\)/,
  });
  t.throws(() => renderCopyright('EUPL-1.2', '2026', dir, ['node_modules/odd']), {
    message: /node_modules\/odd\/package\.json declares no usable licence/,
  });
});

test('bin/build-deb refuses bad arguments with a clear message before it stages or writes anything', (t) => {
  const out = tempDir(t);
  const staging = tempDir(t);
  const cases: Array<[string[], RegExp]> = [
    [['--revision', 'x1'], /--revision must start with a digit .* got "x1"/],
    [['--revision', '1;rm'], /--revision must start with a digit/],
    [['--compression', 'bzip2'], /--compression must be xz or gzip, got "bzip2"/],
    [['--out', path.join(out, 'missing')], /--out: no such directory: .*missing/],
    [['--bogus'], /unknown argument: --bogus/],
  ];
  for (const [args, message] of cases) {
    const r = spawnSync(path.join(ROOT, 'bin', 'build-deb'), ['--out', out, ...args], {
      cwd: ROOT, encoding: 'utf8', env: { ...process.env, TMPDIR: staging },
    });
    t.is(r.status, 1, args.join(' '));
    t.regex(r.stderr, message);
  }
  t.deepEqual(fs.readdirSync(out), [], 'no package written');
  t.deepEqual(fs.readdirSync(staging), [], 'no staging dir made');
});
