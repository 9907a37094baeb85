// Sharing and not losing work: control and view-only links, revocation,
// one-shot sessions, extension limits and life-time warnings — on real QEMU.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { api, startTestBroker } from '../helpers/broker.js';
import type { Broker } from '../../src/main.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { makeSetup, requireQemu, waitFor, writeBlankMachine } from '../helpers/env.js';
import { connectRfb } from '../helpers/rfb-client.js';
import { startSmtpSink } from '../helpers/smtp.js';
import { WebClient } from '../helpers/web-client.js';

test.before(() => requireQemu());

const good = { machine: 'blank', user: 'ada', lifetimeS: 3600 };

test('the owner gets both links; a view-only token sees only its own link and cannot change anything', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const { json: s } = await api(broker, 'POST', '/api/v1/sessions', good);
  t.regex(s.viewUrl, /\/s\/[A-Za-z0-9_-]{43}$/);
  t.not(s.viewUrl, s.url);
  t.is(s.viewWsUrl, s.viewUrl.replace('http', 'ws').replace('/s/', '/ws/'));
  const viewToken = s.viewUrl.split('/s/')[1];
  const asViewer = await api(broker, 'GET', `/api/v1/sessions/${viewToken}`);
  t.is(asViewer.status, 200);
  t.is(asViewer.json.access, 'view');
  t.is(asViewer.json.url, s.viewUrl);
  for (const key of ['token', 'viewUrl', 'viewWsUrl', 'owner']) t.false(key in asViewer.json, `${key} hidden from view-only`);
  t.false(JSON.stringify(asViewer.json).includes(s.token), 'the control token never reaches a view-only holder');
  t.is((await api(broker, 'DELETE', `/api/v1/sessions/${viewToken}`)).status, 403);
  t.is((await api(broker, 'POST', `/api/v1/sessions/${viewToken}/extend`, {})).status, 403);
  const browser = new WebClient(broker.url);
  await browser.get(`/s/${viewToken}`);
  const stopWithViewLink = await browser.post(`/s/${viewToken}/stop`, {});
  t.is(stopWithViewLink.status, 403);
  t.regex(stopWithViewLink.text, /view-only link cannot change/);
  const page = await (await fetch(s.viewUrl)).text();
  t.regex(page, /view-only/);
  t.false(page.includes(s.token));
  const control = await (await fetch(s.url)).text();
  t.is((control.match(/<svg/g) ?? []).length, 2, 'two QR codes on the owner page');
  t.true(control.includes(s.viewUrl));
});

test('revoking a link disconnects its viewers at once, keeps the others, and the old link answers 410', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const { json: s } = await api(broker, 'POST', '/api/v1/sessions', good);
  const controlViewer = await connectRfb(s.wsUrl);
  const viewViewer = await connectRfb(s.viewWsUrl);
  t.teardown(() => { controlViewer.close(); viewViewer.close(); });
  const closed = new Promise<number>((resolve) => viewViewer.ws.once('close', (code) => resolve(code)));
  const revoked = await api(broker, 'POST', `/api/v1/sessions/${s.token}/revoke`, { link: 'view' });
  t.is(revoked.status, 200);
  t.is(await closed, 4001);
  t.not(revoked.json.viewUrl, s.viewUrl);
  t.is(revoked.json.url, s.url, 'the control link is unchanged');
  t.is((await controlViewer.update(false)).length, controlViewer.width * controlViewer.height * 4, 'control viewer still works');
  // The old link says it was revoked, and not that the desktop (which still runs) has ended.
  const revokedText = 'This link was revoked by the owner of the desktop; ask them for a new one.';
  const old = await fetch(s.viewUrl);
  t.is(old.status, 410);
  const oldPage = await old.text();
  t.true(oldPage.includes(revokedText), oldPage);
  t.notRegex(oldPage, /has ended|ended on/);
  const oldViewer = await fetch(`${s.viewUrl}/view`);
  t.is(oldViewer.status, 410);
  t.true((await oldViewer.text()).includes(revokedText), 'the viewer page of the old link says so too');
  const oldApi = await api(broker, 'GET', `/api/v1/sessions/${s.viewUrl.split('/s/')[1]}`);
  t.is(oldApi.status, 410);
  t.is(oldApi.json.error.message, revokedText, 'what the viewer tab shows when its link is revoked');
  const fresh = await connectRfb(revoked.json.viewWsUrl);
  t.true(fresh.width > 0 && fresh.height > 0, 'the new view link connects');
  fresh.close();

  const ctlClosed = new Promise<number>((resolve) => controlViewer.ws.once('close', (code) => resolve(code)));
  const renewed = await api(broker, 'POST', `/api/v1/sessions/${s.token}/revoke`, { link: 'control' });
  t.is(await ctlClosed, 4001);
  const oldControl = await api(broker, 'GET', `/api/v1/sessions/${s.token}`);
  t.is(oldControl.status, 410);
  t.is(oldControl.json.error.message, revokedText, 'the owner\'s own old viewer tab is told the link was revoked, not that the desktop ended');
  t.is((await api(broker, 'GET', `/api/v1/sessions/${renewed.json.token}`)).json.state, 'running');
  t.is((await api(broker, 'POST', `/api/v1/sessions/${s.token}/revoke`, { link: 'sideways' })).status, 410);
  t.is((await api(broker, 'POST', `/api/v1/sessions/${renewed.json.token}/revoke`, { link: 'sideways' })).status, 400);
});

test('a view-only viewer that sends an unknown message type is closed with 4003; a control viewer on the session is unaffected', async (t) => {
  const setup = makeSetup(t);
  const broker = await startTestBroker(t, setup.config);
  const { json: s } = await api(broker, 'POST', '/api/v1/sessions', good);
  const control = await connectRfb(s.wsUrl);
  const viewer = await connectRfb(s.viewWsUrl);
  t.teardown(() => { control.close(); viewer.close(); });
  t.is((await viewer.update(false)).length, viewer.width * viewer.height * 4, 'the view-only viewer works until then');
  t.is(broker.bridge.viewerCount(s.id), 2);
  const closed = new Promise<{ code: number; reason: string }>((resolve) => viewer.ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  // Type 77 is no RFC 6143 §7.5 message nor a known extension: the bridge cannot
  // know its length, so it cannot skip it safely and closes this viewer.
  viewer.sendRaw(Buffer.from([77, 0, 0, 0, 0, 0, 0, 0]));
  t.deepEqual(await closed, { code: 4003, reason: 'protocol error' });
  await waitFor('the bridge to drop the viewer', () => broker.bridge.viewerCount(s.id) === 1, 3000);
  // The control viewer on the same session still gets full and incremental updates.
  t.is((await control.update(false)).length, control.width * control.height * 4);
  control.keyEvent(0x61, true);
  control.keyEvent(0x61, false);
  t.is((await control.update(true)).length, control.width * control.height * 4);
  t.is((await api(broker, 'GET', `/api/v1/sessions/${s.token}`)).json.state, 'running');
});

/** The broker's clock: the grace period passes when the test says so (the bridge, QEMU and HTTP run in real time). */
function brokerClock(): FakeClock {
  return new FakeClock(Date.now());
}

/** What the bridge has told the store about a session's viewers (presence acts on it). */
function viewersRecorded(broker: Broker, id: string, n: number): Promise<unknown> {
  return waitFor(`${n} viewer(s) recorded`, () => broker.services.rows.byId(id)?.viewers === n, 5000);
}

test('a one-shot session ends after its only viewer leaves (after the grace period), not before', async (t) => {
  const setup = makeSetup(t, { sessions: { oneShotGraceS: 3 } });
  const clock = brokerClock();
  const broker = await startTestBroker(t, setup.config, { clock });
  const { json: s } = await api(broker, 'POST', '/api/v1/sessions', { ...good, oneShot: true });
  t.is(s.oneShot, true);
  const first = await connectRfb(s.wsUrl);
  first.close();
  // A reload within the grace period keeps the desktop.
  const reload = await connectRfb(s.wsUrl);
  await viewersRecorded(broker, s.id, 1);
  await clock.advance(3500);
  t.is((await api(broker, 'GET', `/api/v1/sessions/${s.token}`)).json.state, 'running');
  reload.close();
  await viewersRecorded(broker, s.id, 0);
  await clock.advance(2999);
  t.is((await api(broker, 'GET', `/api/v1/sessions/${s.token}`)).json.state, 'running', 'not before');
  await clock.advance(1);
  // 410 "being stopped" while QEMU quits, then the tombstone says why it ended.
  const gone = await waitFor('the one-shot session to end', async () => {
    const res = await api(broker, 'GET', `/api/v1/sessions/${s.token}`);
    return res.status === 410 && !/being stopped/.test(res.json.error.message) ? res : false;
  }, 15000);
  t.regex(gone.json.error.message, /one-shot/);
});

test('a session nobody ever connected to is not ended by one-shot', async (t) => {
  const setup = makeSetup(t, { sessions: { oneShotGraceS: 0 } });
  const clock = brokerClock();
  const broker = await startTestBroker(t, setup.config, { clock });
  const { json: s } = await api(broker, 'POST', '/api/v1/sessions', { ...good, oneShot: true });
  await clock.advance(60_000); // far beyond the grace period, well within the life-time
  t.is((await api(broker, 'GET', `/api/v1/sessions/${s.token}`)).json.state, 'running');
});

/**
 * A one-shot session whose only viewer came and left, then a broker restart
 * inside the grace period (the first broker's timer dies with it): the
 * session as the second broker adopted it.
 */
async function oneShotLeftThenRestarted(t: ExecutionContext, graceS: number) {
  const setup = makeSetup(t, { sessions: { oneShotGraceS: graceS } });
  const clock = brokerClock();
  const first = await startTestBroker(t, setup.config, { keepVms: true, clock });
  const { json: s } = await api(first, 'POST', '/api/v1/sessions', { ...good, oneShot: true });
  const viewer = await connectRfb(s.wsUrl);
  await waitFor('the bridge to count the viewer', () => first.services.manager.get(s.id)!.viewers === 1, 3000);
  viewer.close();
  await waitFor('the bridge to see the viewer go', () => first.services.manager.get(s.id)!.viewers === 0, 3000);
  await first.close();
  const second = await startTestBroker(t, setup.config, { clock });
  return { s, second, clock };
}

test('a one-shot session whose viewer left before a broker restart ends after the grace period once the broker is back', async (t) => {
  const { s, second, clock } = await oneShotLeftThenRestarted(t, 4);
  const adopted = second.services.rows.byId(s.id)!;
  t.is(adopted.state, 'running', 'the VM was adopted');
  t.true(adopted.hadViewer, 'the store remembers that the session had a viewer');
  // The usual grace period, counted from the restart: a reload would still be in time.
  await clock.advance(3999);
  t.is((await api(second, 'GET', `/api/v1/sessions/${s.token}`)).json.state, 'running');
  await clock.advance(1);
  const gone = await waitFor('the one-shot session to end after the restart', async () => {
    const res = await api(second, 'GET', `/api/v1/sessions/${s.token}`);
    return res.status === 410 && !/being stopped/.test(res.json.error.message) ? res : false;
  }, 15000);
  t.regex(gone.json.error.message, /one-shot/);
  t.is(second.services.rows.byId(s.id), undefined);
});

test('a one-shot session adopted after a restart keeps running when a viewer comes back within the grace period', async (t) => {
  const { s, second, clock } = await oneShotLeftThenRestarted(t, 2);
  const back = await connectRfb(`${second.url.replace('http', 'ws')}/ws/${s.token}`);
  t.teardown(() => back.close());
  await viewersRecorded(second, s.id, 1);
  await clock.advance(3500);
  t.is((await api(second, 'GET', `/api/v1/sessions/${s.token}`)).json.state, 'running');
  back.close();
  await viewersRecorded(second, s.id, 0);
  await clock.advance(2000);
  await waitFor('the one-shot session to end once that viewer leaves too', async () => (await api(second, 'GET', `/api/v1/sessions/${s.token}`)).status === 410, 15000);
  t.pass();
});

test('extend adds time up to the maximum life-time and then refuses', async (t) => {
  const setup = makeSetup(t, { limits: { maxLifetimeS: 7200, defaultLifetimeS: 3600 }, sessions: { extendStepS: 3000 } });
  const broker = await startTestBroker(t, setup.config);
  const { json: s } = await api(broker, 'POST', '/api/v1/sessions', good);
  const created = Date.parse(s.createdAt);
  const first = await api(broker, 'POST', `/api/v1/sessions/${s.token}/extend`, {});
  t.is(first.status, 200);
  t.is(Date.parse(first.json.expiresAt), Date.parse(s.expiresAt) + 3000_000);
  const capped = await api(broker, 'POST', `/api/v1/sessions/${s.token}/extend`, { byS: 86400 });
  t.is(Date.parse(capped.json.expiresAt), created + 7200_000);
  const refused = await api(broker, 'POST', `/api/v1/sessions/${s.token}/extend`, {});
  t.is(refused.status, 429);
  t.regex(refused.json.error.message, /maximum life-time/);
  t.is((await api(broker, 'POST', `/api/v1/sessions/${s.token}/extend`, { byS: -5 })).status, 400);
  // The page's Extend button is gone at the cap.
  t.notRegex(await (await fetch(s.url)).text(), /Extend by/);
});

test('life-time warnings are mailed once per point to a real SMTP server and shown in the page', async (t) => {
  const smtp = await startSmtpSink(t);
  const setup = makeSetup(t, {
    purge: { schedule: '* * * * * *' },
    sessions: { warnBeforeS: [3600, 60, 30] },
    mail: { smtpHost: '127.0.0.1', smtpPort: smtp.port, smtpStartTls: false, from: 'desktops@example.org' },
    publicUrl: 'http://desktops.example.org',
  });
  const clock = brokerClock();
  const broker = await startTestBroker(t, setup.config, { clock });
  const { json: s } = await api(broker, 'POST', '/api/v1/sessions', { ...good, lifetimeS: 45, email: 'ada@example.org' });
  await waitFor('a warning mail', () => smtp.mails.length >= 1, 10000);
  t.deepEqual(smtp.mails[0]!.to, ['ada@example.org']);
  t.regex(smtp.mails[0]!.raw, /Subject: Your desktop blank ends in 1 minute/);
  t.true(smtp.mails[0]!.text.includes(`http://desktops.example.org/s/${s.token}`));
  // 45 s left is past the 3600 and 60 s points: one mail for both. The 30 s point comes later.
  await clock.advance(15_000);
  await waitFor('the 30-second warning', () => smtp.mails.length >= 2, 10000);
  // Purge runs go one after the other: once these two have run, so has every run the schedule started before.
  await broker.services.purge.run();
  await broker.services.purge.run();
  t.is(smtp.mails.length, 2, 'each point is mailed once');
  // (publicUrl is only used in links; the test talks to the broker on loopback.)
  const page = await (await fetch(`${broker.url}/s/${s.token}`)).text();
  t.regex(page, /data-warn-before="3600,60,30"/);
});

test('without an address or mail config, nothing is mailed and nothing fails', async (t) => {
  const smtp = await startSmtpSink(t);
  const setup = makeSetup(t, { purge: { schedule: '* * * * * *' }, sessions: { warnBeforeS: [3600] }, mail: { smtpHost: '127.0.0.1', smtpPort: smtp.port, smtpStartTls: false } });
  const broker = await startTestBroker(t, setup.config);
  await api(broker, 'POST', '/api/v1/sessions', good);
  await broker.services.purge.run();
  await broker.services.purge.run();
  t.is(smtp.mails.length, 0);
});

test('each viewer page offers the clipboard the bridge allows that link, and remote resize only where the machine\'s display follows it', async (t) => {
  requireQemu();
  const setup = makeSetup(t, { bridge: { clipboard: 'to-guest', viewOnlyClipboard: true } }, {
    machines: (dir) => {
      writeBlankMachine(dir, 'blank');
      writeBlankMachine(dir, 'wide');
      // The same blank disk, with a display that follows the window and a machine policy of its own.
      const yml = path.join(dir, 'wide.yml');
      fs.writeFileSync(yml, `${fs.readFileSync(yml, 'utf8')}display: virtio\nclipboard: both\n`);
    },
  });
  const broker = await startTestBroker(t, setup.config);
  const page = async (url: string) => {
    const html = await (await fetch(url)).text();
    return { clipboard: /data-clipboard="([a-z-]+)"/.exec(html)?.[1], resize: /data-resize="([a-z]+)"/.exec(html)?.[1] };
  };
  const wide = (await api(broker, 'POST', '/api/v1/sessions', { machine: 'wide', user: 'wanda', lifetimeS: 600 })).json;
  // The site allows pasting only: the stricter of site and machine, for the owner's link.
  t.deepEqual(await page(wide.viewerUrl), { clipboard: 'to-guest', resize: 'remote' });
  // A view-only viewer never pastes; copying is off here because the site's policy does not copy either.
  t.deepEqual(await page(wide.viewViewerUrl), { clipboard: 'off', resize: 'scale' });

  const both = makeSetup(t, { bridge: { clipboard: 'both', viewOnlyClipboard: true } });
  const second = await startTestBroker(t, both.config);
  const blank = (await api(second, 'POST', '/api/v1/sessions', { machine: 'blank', user: 'bo', lifetimeS: 600 })).json;
  t.deepEqual(await page(blank.viewerUrl), { clipboard: 'both', resize: 'scale' }, 'std VGA: the viewer scales');
  t.deepEqual(await page(blank.viewViewerUrl), { clipboard: 'from-guest', resize: 'scale' }, 'view-only receives the guest\'s clipboard where the site says so');
});
