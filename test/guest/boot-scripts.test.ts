import test from 'ava';
import { asShellScript, checkScriptText, cloudInitUserData, resolveScripts, scriptApplies, type ScriptDecl } from '../../src/guest/boot-scripts.js';

const who = { machine: 'demo', user: 'ada', groups: ['beamline-a'] };
const values = { user: 'ada', sessionId: '0123456789ab', machine: 'demo' };
const s = (over: Partial<ScriptDecl>): ScriptDecl => ({ exec: 'echo @USER@ @SESSION_NAME@ @VM@', source: 'test', ...over });

test('conditions are declarative: machines, users, groups (all listed dimensions must match)', (t) => {
  const table: Array<[ScriptDecl['when'], boolean]> = [
    [undefined, true],
    [{}, true],
    [{ machines: ['demo'] }, true],
    [{ machines: ['other'] }, false],
    [{ users: ['ada', 'bob'] }, true],
    [{ users: ['bob'] }, false],
    [{ groups: ['beamline-a'] }, true],
    [{ groups: ['beamline-b'] }, false],
    [{ machines: ['demo'], users: ['bob'] }, false],
  ];
  for (const [when, expected] of table) t.is(scriptApplies(s({ when }), who), expected, JSON.stringify(when));
});

test('placeholders are substituted, only in applicable scripts', (t) => {
  const out = resolveScripts([s({}), s({ when: { users: ['bob'] } })], who, values, 'touch /tmp/@USER@');
  t.deepEqual(out.map((x) => x.text), ['echo ada 0123456789ab demo', 'touch /tmp/ada']);
  t.is(out[1]!.source, 'submitted by the user');
});

test('script checks: length, control characters, empty', (t) => {
  t.throws(() => checkScriptText('x'.repeat(65 * 1024), 'script'), { message: /too long/ });
  t.throws(() => checkScriptText('echo \u0000 hi', 'script'), { message: /control characters/ });
  t.throws(() => checkScriptText('echo \u001b[31m', 'script'), { message: /control characters/ });
  t.throws(() => checkScriptText('  \n', 'script'), { message: /empty/ });
  t.notThrows(() => checkScriptText('#!/bin/bash\r\nset -e\n\techo ok\n', 'script'));
});

test('cloud-init user-data is a multipart of shell scripts, one per script, in order', (t) => {
  const data = cloudInitUserData([{ name: 'a', text: 'echo one', source: 'x' }, { name: 'b c', text: '#!/bin/bash\necho two', source: 'y' }]);
  t.regex(data, /^Content-Type: multipart\/mixed; boundary="qwd-boundary-7f3a"/);
  t.is((data.match(/Content-Type: text\/x-shellscript/g) ?? []).length, 2);
  t.true(data.indexOf('#!/bin/sh\necho one') < data.indexOf('#!/bin/bash\necho two'));
  t.regex(data, /filename="b_c\.sh"/);
  t.is(asShellScript('#!/usr/bin/python3\nprint(1)'), '#!/usr/bin/python3\nprint(1)');
});

test('virt-customize installs each script as a first-boot script of the overlay, offline', async (t) => {
  const { virtCustomizeArgv } = await import('../../src/guest/seed-iso.js');
  t.deepEqual(virtCustomizeArgv('/run/q/s1/disk.qcow2', ['/run/q/s1/firstboot/01-a.sh', '/run/q/s1/firstboot/02-b.sh']), [
    '--format', 'qcow2', '-a', '/run/q/s1/disk.qcow2', '--no-network', '--firstboot', '/run/q/s1/firstboot/01-a.sh', '--firstboot', '/run/q/s1/firstboot/02-b.sh',
  ]);
});
