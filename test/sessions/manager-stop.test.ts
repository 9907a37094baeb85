// The house rule for stopping, on real QEMU: stop escalates, then postStop
// always runs and releases everything the session held (row, run dir, GPU
// claim, viewers) — even when the launcher's stop throws (a VM that survived
// SIGKILL, a failed scancel). The failure itself is not swallowed: stop()
// rejects with it, and it is audited as 'stop-failed'.
//
// A launcher whose stop throws cannot be produced on demand with a real VM, so
// these tests use a small wrapper around the real LocalLauncher: it really
// stops the VM (QMP quit → SIGTERM → SIGKILL) and then throws the error
// local.ts throws when qemu survives SIGKILL. Everything else is real.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import { createServices, type Services } from '../../src/main.js';
import { LocalLauncher } from '../../src/launcher/local.js';
import type { StopOutcome, VmHandle } from '../../src/launcher/types.js';
import { SessionManager, type EndedEvent } from '../../src/sessions/manager.js';
import { PurgeService } from '../../src/purge/service.js';
import { QwdError } from '../../src/errors.js';
import { createMailer } from '../../src/notify/mailer.js';
import { silentLogger } from '../../src/log.js';
import { makeSetup, pidsMentioning, requireQemu, waitFor } from '../helpers/env.js';
import { startSmtpSink } from '../helpers/smtp.js';

test.before(() => requireQemu());

/** The real LocalLauncher, except that stop() throws after it has really stopped the VM. */
class StopThrowsLauncher extends LocalLauncher {
  readonly outcomes: StopOutcome[] = [];
  override async stop(vm: VmHandle): Promise<StopOutcome> {
    this.outcomes.push(await super.stop(vm));
    throw new QwdError('QWD_INTERNAL', `qemu pid ${(vm as { pid?: number }).pid} survived SIGKILL for 10 s`);
  }
}

async function servicesFor(t: ExecutionContext, raw: Record<string, unknown> = {}): Promise<{ services: Services; stateDir: string }> {
  const setup = makeSetup(t, raw);
  const services = await createServices(setup.config, silentLogger());
  t.teardown(async () => {
    // Whatever a failed assertion left running is stopped by the real manager, by its PID.
    for (const row of services.rows.all()) await services.manager.stop(row.id, 'test teardown').catch(() => {});
    services.load.stop();
    services.db.close();
  });
  return { services, stateDir: setup.stateDir };
}

function managerWith(services: Services, launcher: LocalLauncher) {
  const { config, rows, catalog, load } = services;
  const manager = new SessionManager({ config, rows, catalog, launcher, load, log: silentLogger(), discoverGpus: () => [] });
  return manager;
}

test('when the launcher\'s stop throws, stop still releases the row, run dir, GPU claim and viewers, and reports the failure', async (t) => {
  const { services, stateDir } = await servicesFor(t);
  const launcher = new StopThrowsLauncher({ config: services.config, accel: services.accel, log: silentLogger() });
  const manager = managerWith(services, launcher);
  const row = await manager.create({ machine: 'blank', user: 'ada', memoryMiB: 64, lifetimeS: 600 });
  t.is(row.state, 'running');
  services.rows.claimGpu('0000:01:00.0', row.id, ['0000:01:00.0', '0000:01:00.1'], Date.now());
  t.true(fs.existsSync(row.runDir));
  const ended: EndedEvent[] = [];
  manager.on('ended', (e: EndedEvent) => ended.push(e)); // the bridge closes its viewers on this event

  const err = await t.throwsAsync(manager.stop(row.id, 'stopped by the owner'));
  t.regex(err!.message, /survived SIGKILL/, 'the launcher\'s failure reaches the caller');
  t.deepEqual(launcher.outcomes.length, 1);
  t.is(services.rows.byId(row.id), undefined, 'no row left in "stopping"');
  t.false(fs.existsSync(row.runDir), 'run dir (sockets, overlay) removed');
  t.deepEqual(services.rows.gpuClaims(), [], 'GPU claim released');
  t.deepEqual(ended, [{ id: row.id, end: { code: 'stopped', detail: 'stopped by the owner' } }], 'viewers told to close');
  t.is(services.rows.ended(row.tokenHash)?.end.detail, 'stopped by the owner', 'the link answers "ended"');
  const audit = services.db.prepare("SELECT kind, detail FROM events WHERE session_id = ? AND kind IN ('stop-failed', 'ended') ORDER BY id").all(row.id) as Array<{ kind: string; detail: string }>;
  t.deepEqual(audit.map((e) => e.kind), ['stop-failed', 'ended']);
  t.regex(JSON.parse(audit[0]!.detail).error, /survived SIGKILL/);
  t.is(JSON.parse(audit[0]!.detail).handle.pid, (row.handle as { pid: number }).pid, 'the audit line names the process to look for');
  t.deepEqual(pidsMentioning(stateDir), [], 'the wrapper really stopped qemu');
  await t.notThrowsAsync(manager.stop(row.id), 'a second stop is a no-op');
});

test('a session stopped while starting is cleaned up even when stopping its fresh VM throws', async (t) => {
  const { services, stateDir } = await servicesFor(t);
  const launcher = new StopThrowsLauncher({ config: services.config, accel: services.accel, log: silentLogger() });
  const manager = managerWith(services, launcher);
  const creating = manager.create({ machine: 'blank', user: 'ada', memoryMiB: 64, lifetimeS: 600 });
  const id = await waitFor('the starting row', () => services.rows.all()[0]?.id, 5000);
  t.is(services.rows.byId(id)!.state, 'starting');
  // stop() during the start: launched() finds 'stopping', stops the new VM (which throws) and must still clean up.
  await manager.stop(id, 'cancelled');
  const err = await t.throwsAsync(creating);
  t.regex(err!.message, /survived SIGKILL/);
  t.is(launcher.outcomes.length, 1, 'the fresh VM was stopped');
  t.deepEqual(services.rows.all(), []);
  t.deepEqual(fs.readdirSync(launcher.runRoot), []);
  t.deepEqual(pidsMentioning(stateDir), []);
  const failed = services.db.prepare("SELECT COUNT(*) AS n FROM events WHERE session_id = ? AND kind = 'stop-failed'").get(id) as { n: number };
  t.is(failed.n, 1);
});

test('a warning mail without a link to the page has no empty line where the link would be', async (t) => {
  const smtp = await startSmtpSink(t);
  const { services } = await servicesFor(t, {
    sessions: { warnBeforeS: [3600] },
    mail: { smtpHost: '127.0.0.1', smtpPort: smtp.port, smtpStartTls: false, from: 'desktops@example.org' },
  });
  const mailer = createMailer(services.config.mail)!;
  t.teardown(() => mailer.close());
  // No baseUrl: the manager has no public address to link to (qwdctl without a broker address).
  const manager = managerWith(services, services.launcher as LocalLauncher);
  const purge = new PurgeService({ manager, rows: services.rows, launcher: services.launcher, config: services.config, log: silentLogger(), mailer });
  const row = await manager.create({ machine: 'blank', user: 'ada', memoryMiB: 64, lifetimeS: 600, email: 'ada@example.org' });
  t.teardown(() => manager.stop(row.id).catch(() => {}));
  await purge.run();
  await waitFor('the warning mail', () => smtp.mails.length >= 1, 10000);
  const body = smtp.mails[0]!.text.replace(/\r\n/g, '\n');
  t.regex(body, /Save your work before then: the virtual machine and its disk are deleted at the end\.\n\n-- qemu-web-desktop/);
  t.false(body.includes('extend it'), 'no sentence about a link that is not there');
});
