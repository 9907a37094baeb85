// Build-time helpers of bin/build-deb (run with `node --import tsx`), the parts of the Debian
// package that are made from the project's own sources rather than copied:
//   config    the package's /etc/qemu-web-desktop/config.yml: only the values a packaged install
//             needs (the full config.example.yml ships as documentation);
//   man       qwdctl(1) in roff, generated from qwdctl's own commander help (every command,
//             option and description as `qwdctl --help` prints them);
//   copyright debian/copyright in the machine-readable format: the project, then each bundled
//             production npm package with the licence its package.json declares.
// Not product code: nothing here runs on an installed system. The pure renderers are exported
// for test/packaging/build-helpers.test.ts; main() at the bottom is the command line.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Command, Help, Option } from 'commander';
import { parse as parseYaml } from 'yaml';

/** Where the package puts things (INSTALL.md, "Installing from the Debian package"). */
export const PACKAGE_PATHS = {
  stateDir: '/var/lib/qemu-web-desktop',
  machinesDir: '/var/lib/qemu-web-desktop/machines',
} as const;

interface PackageValue {
  /** The key's path in the YAML document. */
  keyPath: string[];
  value: string;
  why: string;
}

const PACKAGE_VALUES: PackageValue[] = [
  {
    keyPath: ['stateDir'], value: PACKAGE_PATHS.stateDir,
    why: 'the package keeps its state in /var/lib/qemu-web-desktop (created by postinst, 0700, removed on purge)',
  },
  {
    keyPath: ['machinesDir'], value: PACKAGE_PATHS.machinesDir,
    why: 'machine descriptors and their images (INSTALL.md, "Installing from the Debian package")',
  },
  {
    keyPath: ['qemu', 'network'], value: 'none',
    why: 'the packaged service runs as the unprivileged user qemu-web-desktop, and a guest network ' +
      '(network: user) needs root for its per-session network namespace (INSTALL.md, "Guest network")',
  },
];

/** Where the package installs the full example config (every key, its default and its meaning). */
export const PACKAGED_EXAMPLE = '/usr/share/doc/qemu-web-desktop/examples/config.example.yml';

/**
 * The lines of the packaged config that an administrator uncomments before publishing the
 * service (INSTALL.md, "Installing from the Debian package", step 4); valid YAML once the
 * leading "# " is removed (test/packaging/build-helpers.test.ts parses them so).
 */
export const PUBLISHING_BLOCK = [
  '# Before the service is published (INSTALL.md, "Installing from the Debian package", step 4):',
  '# the address people use, the proxy in front (nginx on this host), and who may log in. Without',
  '# an auth block the default applies: type none, where users type a name and NOTHING proves it.',
  '# Backends: INSTALL.md, "Authentication" and "Single sign-on (OpenID Connect)"; their secrets',
  '# (bindPassword, clientSecret, smtpPassword) may go here: this file is 0640 root:qemu-web-desktop.',
  '#',
  '# publicUrl: https://desktops.example.org',
  '# trustProxy: [loopback]',
  '# auth:',
  '#   backends:',
  '#     - type: local                 # accounts made with: qwdctl users add NAME',
] as const;

/**
 * The packaged /etc/qemu-web-desktop/config.yml: only the values the package needs (every other
 * key keeps its default), each with its reason, and a commented block for publishing. Short on
 * purpose: it is a conffile, and dpkg asks the administrator about every change of it; the full
 * example ships as documentation. `exampleText` is config.example.yml: each key set here must
 * exist in it (a renamed key fails the build instead of shipping a config the broker refuses).
 */
export function renderPackagedConfig(exampleText: string): string {
  const example = parseYaml(exampleText) as Record<string, unknown>;
  for (const v of PACKAGE_VALUES) {
    let node: unknown = example;
    for (const k of v.keyPath) {
      if (!node || typeof node !== 'object' || !(k in node)) {
        throw new Error(`config.example.yml has no key ${v.keyPath.join('.')}: update etc/debian/build-helpers.ts`);
      }
      node = (node as Record<string, unknown>)[k];
    }
  }
  const comment = (why: string, indent: string): string[] =>
    wrapComment(`# ${why[0]!.toUpperCase()}${why.slice(1)}.`, '# ', 100 - indent.length).map((l) => indent + l);
  const lines = [
    '# /etc/qemu-web-desktop/config.yml — installed by the Debian package qemu-web-desktop.',
    '# A conffile: your changes are kept on upgrade (dpkg asks when the packaged file changed too).',
    '# The service reads it (QWD_CONFIG in its systemd unit) and so does /usr/bin/qwdctl.',
    '# Only the package\'s own values are set here; every other key keeps its default. Every key,',
    `# with its default and meaning: ${PACKAGED_EXAMPLE}`,
    '# (copy the keys you need from there) and /usr/share/doc/qemu-web-desktop/INSTALL.md.gz.',
    '# Check your edits with: qwdctl config check',
    '',
  ];
  const [stateDir, machinesDir, network] = PACKAGE_VALUES as [PackageValue, PackageValue, PackageValue];
  lines.push(...comment(stateDir.why, ''), `stateDir: ${stateDir.value}`, '');
  lines.push(...comment(machinesDir.why, ''), `machinesDir: ${machinesDir.value}`, '');
  lines.push('qemu:', ...comment(network.why, '  '), `  network: ${network.value}`, '');
  lines.push(...PUBLISHING_BLOCK);
  const text = `${lines.join('\n')}\n`;
  const parsed = parseYaml(text) as Record<string, unknown>;
  for (const v of PACKAGE_VALUES) {
    let node: unknown = parsed;
    for (const k of v.keyPath) node = (node as Record<string, unknown> | null)?.[k];
    if (String(node) !== v.value) {
      throw new Error(`packaged config: ${v.keyPath.join('.')} reads ${JSON.stringify(node)}, expected ${v.value}`);
    }
  }
  return text;
}

function wrapComment(line: string, continuation: string, width = 100): string[] {
  const out: string[] = [];
  let current = '';
  for (const word of line.split(' ')) {
    if (current && current.length + 1 + word.length > width) {
      out.push(current);
      current = continuation + word;
    } else current = current ? `${current} ${word}` : word;
  }
  out.push(current);
  return out;
}

/** roff-escapes text for a man page line (backslashes, leading dots and quotes, hyphens). */
export function roffEscape(text: string): string {
  return text
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .replace(/^([.'])/gm, '\\&$1');
}

function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

function optionsSection(help: Help, cmd: Command, options: readonly Option[]): string[] {
  const out: string[] = [];
  for (const option of options) {
    out.push('.TP', `.B ${roffEscape(help.optionTerm(option))}`, roffEscape(help.optionDescription(option)));
  }
  return out;
}

/**
 * qwdctl(1) from the commander program: NAME, SYNOPSIS, DESCRIPTION, the global OPTIONS,
 * then COMMANDS with every subcommand (recursively), its usage, description and options,
 * FILES and SEE ALSO for the packaged install. `date` is the changelog date (reproducible).
 */
export function renderManPage(program: Command, version: string, date: string): string {
  const help = program.createHelp();
  const lines: string[] = [
    `.TH QWDCTL 1 "${date}" "qemu-web-desktop ${version}" "User Commands"`,
    '.SH NAME',
    `qwdctl \\- ${roffEscape(program.description())}`,
    '.SH SYNOPSIS',
    '.B qwdctl',
    '[\\fIoptions\\fR] \\fIcommand\\fR [\\fIarguments\\fR]',
    '.SH DESCRIPTION',
    'The administrator\'s command line of qemu\\-web\\-desktop, and the broker\'s entry point',
    '(\\fBqwdctl serve\\fR, which the systemd unit runs). While the broker runs, commands go',
    'through its admin socket in the state directory; otherwise qwdctl opens the store itself.',
    'Every read command takes \\fB\\-\\-json\\fR. This page is generated from qwdctl\'s own help.',
    '.SH OPTIONS',
    ...optionsSection(help, program, help.visibleOptions(program)),
    '.SH COMMANDS',
  ];
  const walk = (cmd: Command): void => {
    for (const sub of help.visibleCommands(cmd)) {
      if (sub.name() === 'help') continue;
      lines.push('.SS', `.B ${roffEscape(`${commandPath(sub)} ${sub.usage()}`.trim())}`);
      const aliases = sub.aliases();
      if (aliases.length) lines.push(`(alias: ${roffEscape(aliases.join(', '))})`, '.br');
      lines.push(roffEscape(sub.description()));
      const options = help.visibleOptions(sub).filter((o) => o.long !== '--help');
      if (options.length) lines.push('.RS', ...optionsSection(help, sub, options), '.RE');
      walk(sub);
    }
  };
  walk(program);
  lines.push(
    '.SH ENVIRONMENT',
    '.TP', '.B QWD_CONFIG', 'The config file. /usr/bin/qwdctl sets it to /etc/qemu\\-web\\-desktop/config.yml unless set.',
    '.TP', '.B QWD_STATE_DIR', 'The state directory (overrides \\fBstateDir\\fR).',
    '.TP', '.B QWD_PORT', 'The listen port of \\fBserve\\fR (overrides \\fBlisten.port\\fR).',
    '.SH EXIT STATUS',
    '0 success, 1 usage, 3 not found or gone, 4 refused, 5 launch failed, 6 configuration,',
    '7 download, 70 internal error.',
    '.SH FILES',
    '.TP', '.I /etc/qemu\\-web\\-desktop/config.yml', 'The configuration (every key, with its default and meaning).',
    '.TP', '.I /var/lib/qemu\\-web\\-desktop', 'State: the SQLite store, the admin socket, session run directories.',
    '.TP', '.I /var/lib/qemu\\-web\\-desktop/machines', 'Machine descriptors (one YAML file per machine) and their images.',
    '.SH SEE ALSO',
    '/usr/share/doc/qemu\\-web\\-desktop/INSTALL.md.gz',
  );
  return `${lines.join('\n')}\n`;
}

interface NpmPackageJson { name?: string; version?: string; license?: unknown; licenses?: unknown }

function licenseOf(pkg: NpmPackageJson): string {
  if (typeof pkg.license === 'string') return pkg.license;
  if (pkg.license && typeof pkg.license === 'object' && 'type' in pkg.license) {
    return String((pkg.license as { type: unknown }).type);
  }
  if (Array.isArray(pkg.licenses)) {
    return pkg.licenses.map((l: { type?: unknown }) => String(l.type)).join(' or ');
  }
  return 'unknown';
}

/** The licence a bundled package declares; none (or an unusable one) fails the build: copyright must name it. */
function declaredLicense(pkg: NpmPackageJson, dir: string): string {
  const license = licenseOf(pkg);
  if (!license || /^(unknown|undefined|null|UNLICENSED)$/i.test(license) || license.includes('undefined')) {
    throw new Error(`${dir}/package.json declares no usable licence (${JSON.stringify(license)}): ` +
      'the package cannot be shipped without knowing its licence (copyright lists each one)');
  }
  return license;
}

/**
 * debian/copyright (DEP-5): the project under its licence, then one stanza per bundled npm
 * package (its directory under /usr/lib/qemu-web-desktop/node_modules) with the licence it
 * declares. `moduleDirs` are paths relative to the staged install dir.
 */
export function renderCopyright(
  projectLicense: string, years: string, installDir: string, moduleDirs: string[],
): string {
  const out = [
    'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/',
    'Upstream-Name: qemu-web-desktop',
    'Comment: The bundled npm packages are listed one by one below with the licence each declares',
    ' in its package.json; their own LICENSE files are installed beside them under',
    ' /usr/lib/qemu-web-desktop/node_modules.',
    '',
    'Files: *',
    `Copyright: ${years} the qemu-web-desktop authors`,
    `License: ${projectLicense}`,
  ];
  if (projectLicense === 'EUPL-1.2') {
    out.push(' European Union Public Licence v. 1.2, https://interoperable-europe.ec.europa.eu/collection/eupl',
      ' (the text in all EU languages is published there).');
  }
  for (const dir of [...moduleDirs].sort()) {
    const pkg = JSON.parse(fs.readFileSync(path.join(installDir, dir, 'package.json'), 'utf8')) as NpmPackageJson;
    out.push('', `Files: usr/lib/qemu-web-desktop/${dir}/*`,
      `Copyright: the authors of ${pkg.name ?? dir} ${pkg.version ?? ''}`.trimEnd(),
      `License: ${declaredLicense(pkg, dir)}`,
      ' See the licence file in that directory, or the package\'s repository.');
  }
  return `${out.join('\n')}\n`;
}

async function main(argv: string[]): Promise<void> {
  const [what, ...rest] = argv;
  if (what === 'config') {
    const [example] = rest;
    if (!example) throw new Error('usage: build-helpers.ts config EXAMPLE.yml');
    process.stdout.write(renderPackagedConfig(fs.readFileSync(example, 'utf8')));
  } else if (what === 'man') {
    const [distDir, version, date] = rest;
    if (!distDir || !version || !date) throw new Error('usage: build-helpers.ts man DIST_DIR VERSION DATE');
    const cli = await import(pathToFileURL(path.resolve(distDir, 'cli', 'qwdctl.js')).href) as
      { buildProgram: () => { program: Command } };
    process.stdout.write(renderManPage(cli.buildProgram().program, version, date));
  } else if (what === 'copyright') {
    const [license, years, installDir, ...dirs] = rest;
    if (!license || !years || !installDir) {
      throw new Error('usage: build-helpers.ts copyright LICENSE YEARS INSTALL_DIR MODULE_DIR...');
    }
    process.stdout.write(renderCopyright(license, years, installDir, dirs));
  } else {
    throw new Error(`unknown helper "${what ?? ''}" (config, man, copyright)`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`build-helpers: ${(err as Error).message}\n`);
    process.exit(1);
  });
}
