// The HTTP part of the abuse corpus: one real broker (local accounts, a live
// desktop of alice's), then a table of hostile requests — methods, paths with
// traversal, encoding tricks and huge lengths, bad JSON (10,000 nesting
// levels in every JSON endpoint), wrong content types, huge bodies, bad
// numbers, unicode, header abuse, CSRF tricks, other users' tokens, every API
// endpoint and form. Each case: no 5xx, and a QWD_* code in every JSON error.
// After the table (run twice: the first pass warms the JIT and caches): no
// file in the state or run dirs beyond those before, no QEMU process more, no
// session or browser-session row more, RSS within 10 % of the warmed-up
// value, and no token in the broker's log.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { makeSetup, pidsMentioning, requireQemu } from '../helpers/env.js';
import { WebClient } from '../helpers/web-client.js';
import { rawRequest, type RawAnswer } from '../helpers/raw-http.js';
import { SecretCollector, assertNoTokenInLog, startLoggingBroker } from '../helpers/log-secrets.js';
import { hashPassword } from '../../src/auth/password-hash.js';
import { hashToken, newApiToken } from '../../src/auth/service.js';

test.before(() => requireQemu());

type Who = 'anon' | 'alice' | 'bob' | 'bobToken';

interface Case {
  title: string;
  who: Who;
  method: string;
  target: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Statuses this case may get (default: any 4xx, or 2xx/3xx for harmless reads). */
  expect?: number[];
  noHost?: boolean;
  /** Send the caller's CSRF token (X-CSRF-Token for /api/, else the _csrf form field). */
  csrf?: boolean;
}

interface Ctx {
  token: string;
  viewToken: string;
}

const deepArray = (n = 10000) => '['.repeat(n) + ']'.repeat(n);
const deepObject = (n = 10000) => '{"a":'.repeat(n) + '1' + '}'.repeat(n);
const JSON_HEADERS = { 'Content-Type': 'application/json', Accept: 'application/json' };
const FORM_HEADERS = { 'Content-Type': 'application/x-www-form-urlencoded' };
const good = { machine: 'blank', cpus: 1, memoryMiB: 128, lifetimeS: 600 };

function corpus(c: Ctx): Case[] {
  const cases: Case[] = [];
  const add = (x: Case) => cases.push(x);
  const api = (title: string, who: Who, method: string, target: string, body: string | undefined, expect?: number[], headers: Record<string, string> = JSON_HEADERS) =>
    add({ title, who, method, target, body, expect, headers, csrf: who === 'alice' || who === 'bob' });

  // Methods on every route.
  for (const target of ['/', '/sessions', '/login', '/logout', '/manage', '/api/v1/sessions', `/api/v1/sessions/${c.token}`, `/s/${c.token}`, `/s/${c.token}/stop`, '/admin/stop-all']) {
    for (const method of ['PUT', 'PATCH', 'OPTIONS', 'TRACE', 'PROPFIND', 'FOO']) add({ title: `${method} ${target.replace(c.token, '<token>')}`, who: 'bob', method, target, expect: method === 'OPTIONS' ? [200, 204, 404] : [403, 404, 405, 400] });
  }
  add({ title: 'HEAD /', who: 'anon', method: 'HEAD', target: '/', expect: [200, 303] });
  add({ title: 'DELETE / as a form', who: 'alice', method: 'DELETE', target: '/', expect: [403, 404] });

  // Paths: traversal, encodings, NUL, huge lengths, unicode.
  const paths = [
    '/static/../../etc/passwd', '/static/..%2f..%2fetc%2fpasswd', '/static/%2e%2e/%2e%2e/etc/passwd', '/static/..%5c..%5cpackage.json',
    '/novnc/../../package.json', '/novnc/..%2F..%2Fpackage.json', '/novnc/%2e%2e%2f%2e%2e%2fpackage.json', '/static/%00', '/static/.git/config',
    '/s/../../etc/passwd', '/s/..%2F..%2Fetc%2Fpasswd', '/s/%252e%252e%252f', '/s/%00', '/s/%', '/s/%ff%fe', '/s/%C0%AE%C0%AE',
    '/api/v1/sessions/..%2F..%2F', '/api/v1/../../etc/passwd', '/api/%', '/api/v1/sessions/%ff', '/api/v1/sessions/%00', '/login/email/%',
    '/login/email/..%2F..', '//etc/passwd', '/%00', '/?%', '/manage?%', '/s/ä', '/s/%F0%9F%98%80', '/s/%E2%80%AE' + 'A'.repeat(40),
    `/s/${'A'.repeat(8000)}`, `/api/v1/sessions/${'A'.repeat(8000)}`, `/?q=${'x'.repeat(8000)}`, `/login?next=${'/'.repeat(4000)}`,
    `/login?next=%2F%E2%80%AE`, '/login?next=javascript:alert(1)', '/login?next=//evil.example', '/login?next=%5C%5Cevil.example',
    `/s/${c.token}/view/../../stop`, `/s/${c.token}%2Fstop`, `/s/${c.token.toLowerCase()}`, `/s/${c.token} `, `/s/${c.token}%20`,
    `/s/${c.viewToken}/revoke/control`, '/ws/', '/ws/x', '/metrics', '/healthz/../api/v1/sessions', '/favicon.ico/..', '/login?next[]=a&next[]=b',
  ];
  for (const p of paths) add({ title: `GET ${p.slice(0, 60)}`, who: 'anon', method: 'GET', target: p.replace(/ /g, '%20') });
  for (const p of paths.slice(0, 20)) add({ title: `GET ${p.slice(0, 60)} logged in`, who: 'alice', method: 'GET', target: p });
  add({ title: 'a 20,000-character path', who: 'anon', method: 'GET', target: `/${'a'.repeat(20000)}` });
  add({ title: 'a raw space and unicode in the request line', who: 'anon', method: 'GET', target: '/s/\u00e4\u00e4' });

  // Bad JSON and deep JSON in every JSON endpoint.
  const badJson = ['{', '[', 'nul', '"str"', '123', '{"a":}', '{"machine":"blank",}', '\ufeff{"machine":"blank"}', '\u0000', '{"machine":"blank"}{"x":1}', "{'machine':'blank'}", '{"machine":"blank","user":"a","cpus":1e400}'];
  for (const b of badJson) api(`bad JSON ${JSON.stringify(b).slice(0, 30)}`, 'anon', 'POST', '/api/v1/sessions', b, [400, 401]);
  const deep = [['top-level arrays', deepArray()], ['top-level objects', deepObject()]] as const;
  for (const [what, body] of deep) {
    api(`10,000 nested ${what} to POST /api/v1/sessions`, 'bobToken', 'POST', '/api/v1/sessions', body, [400]);
    // A body without byS would extend by the default step: the deep value goes into byS.
    api(`10,000 nested ${what} to extend`, 'alice', 'POST', `/api/v1/sessions/${c.token}/extend`, `{"byS":${body}}`, [400]);
    api(`10,000 nested ${what} to revoke`, 'alice', 'POST', `/api/v1/sessions/${c.token}/revoke`, body, [400]);
    api(`10,000 nested ${what} to DELETE`, 'bob', 'DELETE', `/api/v1/sessions/${c.token}`, body, [403]);
    add({ title: `10,000 nested ${what} to the login form`, who: 'anon', method: 'POST', target: '/login', headers: JSON_HEADERS, body, expect: [403] });
    add({ title: `10,000 nested ${what} to the create form`, who: 'alice', method: 'POST', target: '/sessions', headers: JSON_HEADERS, body, expect: [403] });
  }
  // (A logged-in caller's user field is replaced by their name: user is tried by anonymous callers below.)
  for (const field of ['machine', 'cpus', 'memoryMiB', 'lifetimeS', 'email', 'oneShot', 'gpus', 'script']) {
    for (const [what, nested] of [['arrays', deepArray()], ['objects', deepObject()]] as const) {
      api(`10,000 nested ${what} in ${field}`, 'bobToken', 'POST', '/api/v1/sessions', `{"machine":"blank",${field === 'machine' ? '' : '"user":"bob",'}"${field}":${nested}}`.replace('"machine":"blank","machine"', '"machine"'), [400]);
    }
  }
  api('10,000 nested arrays in byS', 'alice', 'POST', `/api/v1/sessions/${c.token}/extend`, `{"byS":${deepArray()}}`, [400]);
  api('10,000 nested objects in link', 'alice', 'POST', `/api/v1/sessions/${c.token}/revoke`, `{"link":${deepObject()}}`, [400]);
  add({ title: '10,000 nested arrays in _csrf', who: 'alice', method: 'POST', target: '/sessions', headers: JSON_HEADERS, body: `{"_csrf":${deepArray()}}`, expect: [403] });
  for (const nested of [deepArray(), deepObject()]) api('10,000 nested levels in user, anonymously', 'anon', 'POST', '/api/v1/sessions', `{"machine":"blank","user":${nested}}`, [401]);

  // Wrong content types and encodings.
  const body = JSON.stringify({ ...good, user: 'bob' });
  for (const type of ['text/plain', 'application/xml', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded', 'application/json; charset=utf-16', 'application/json; charset=bogus', '', 'application/ld+json', 'text/json', '*/*']) {
    api(`content type ${JSON.stringify(type)} to the API`, 'bobToken', 'POST', '/api/v1/sessions', body, [400, 413, 415], { ...(type ? { 'Content-Type': type } : {}), Accept: 'application/json' });
  }
  for (const enc of ['gzip', 'deflate', 'br', 'compress', 'x-unknown']) {
    api(`Content-Encoding ${enc} with plain bytes`, 'bobToken', 'POST', '/api/v1/sessions', body, [400, 415], { ...JSON_HEADERS, 'Content-Encoding': enc });
  }

  // Huge bodies.
  api('a 200 KB JSON body', 'bobToken', 'POST', '/api/v1/sessions', JSON.stringify({ ...good, user: 'x'.repeat(200_000) }), [413]);
  api('a 2 MB JSON body', 'bobToken', 'POST', '/api/v1/sessions', JSON.stringify({ ...good, script: 'x'.repeat(2_000_000) }), [413]);
  add({ title: 'a 200 KB form', who: 'alice', method: 'POST', target: '/sessions', headers: FORM_HEADERS, body: `machine=blank&user=${'x'.repeat(200_000)}`, expect: [413] });
  add({ title: 'a form with 1000 fields', who: 'alice', method: 'POST', target: '/sessions', headers: FORM_HEADERS, body: Array.from({ length: 1000 }, (_, i) => `f${i}=1`).join('&'), expect: [413, 403] });
  add({ title: 'Content-Length and Transfer-Encoding together', who: 'anon', method: 'POST', target: '/api/v1/sessions', headers: { ...JSON_HEADERS, 'Content-Length': '5', 'Transfer-Encoding': 'chunked' }, body: '0\r\n\r\n', expect: [400] });
  add({ title: 'a negative Content-Length', who: 'anon', method: 'POST', target: '/api/v1/sessions', headers: { ...JSON_HEADERS, 'Content-Length': '-1' }, expect: [400] });
  add({ title: 'a non-numeric Content-Length', who: 'anon', method: 'POST', target: '/api/v1/sessions', headers: { ...JSON_HEADERS, 'Content-Length': 'abc' }, expect: [400] });

  // Bad numbers, odd types, unicode in fields (all refused before anything is made).
  const fields: Array<[string, unknown]> = [
    ['cpus', '0x10'], ['cpus', '1e3'], ['cpus', -1], ['cpus', 0], ['cpus', '\u0661'], ['cpus', 'Infinity'], ['cpus', 1.0000000001], ['cpus', 2 ** 53 + 1], ['cpus', [1]], ['cpus', { n: 1 }], ['cpus', true],
    ['memoryMiB', '64 MiB'], ['memoryMiB', 1e308], ['memoryMiB', -0.5], ['memoryMiB', '128\u0000'], ['lifetimeS', []], ['lifetimeS', {}], ['lifetimeS', 0], ['lifetimeS', '9'.repeat(30)],
    ['machine', 'blank\u0000'], ['machine', 'BLANK'], ['machine', '../blank'], ['machine', 'blank '], ['machine', '\u0432lank'], ['machine', 'x'.repeat(300)], ['machine', 7],
    ['email', 'a@b.c\u202e'], ['email', 'not-an-address'], ['email', ['a@b.org']], ['oneShot', 'maybe'], ['oneShot', 2], ['gpus', 5], ['gpus', '-1'], ['__proto__', { admin: true }], ['constructor', { prototype: {} }],
  ];
  for (const [key, value] of fields) {
    api(`${key} = ${JSON.stringify(value)?.slice(0, 30)}`, 'bobToken', 'POST', '/api/v1/sessions', `{"machine":"blank","cpus":1,${key === 'machine' ? '' : '"user":"bob",'}${JSON.stringify(key)}:${JSON.stringify(value)}}`.replace('"machine":"blank","cpus":1,"machine"', '"cpus":1,"machine"').replace(',"user":"bob","user"', ',"user"').replace('"cpus":1,"cpus"', '"cpus"'), [400, 404]);
  }
  for (const user of ['\u00e4dmin', 'admin\u200b', 'a\u0000b', '\ud835\udcea\ud835\udcf5', '-rf', 'a b', '<script>', 'x'.repeat(5000)]) {
    api(`user = ${JSON.stringify(user).slice(0, 30)}, anonymously`, 'anon', 'POST', '/api/v1/sessions', JSON.stringify({ ...good, user }), [401]);
  }
  for (const byS of ['"60"', '-60', '0', '1e-300', '"1e3"', '"1h"', '[60]', '{"s":60}', '1.5']) api(`extend by ${byS}`, 'alice', 'POST', `/api/v1/sessions/${c.token}/extend`, `{"byS":${byS}}`, [400]);
  for (const link of ['"both"', '"CONTROL"', 'null', '1', '["view"]', '"view\\u0000"']) api(`revoke link ${link}`, 'alice', 'POST', `/api/v1/sessions/${c.token}/revoke`, `{"link":${link}}`, [400]);

  // Header abuse.
  const headerCases: Array<[string, Record<string, string>, boolean?]> = [
    ['Host: evil.example', { Host: 'evil.example' }], ['no Host', {}, true], ['two Hosts', { Host: 'a', host: 'b' }],
    ['an 8 KB header', { 'X-Junk': 'x'.repeat(8192) }], ['a 20 KB header', { 'X-Junk': 'x'.repeat(20_000) }],
    ['X-Forwarded-For garbage', { 'X-Forwarded-For': 'not-an-ip, ::::, 999.1.1.1' }], ['X-Forwarded-Proto https (untrusted)', { 'X-Forwarded-Proto': 'https' }],
    ['a cookie qwd.sid=%', { Cookie: 'qwd.sid=%' }], ['a cookie qwd.sid=s%3A', { Cookie: 'qwd.sid=s%3A' }], ['a forged signed cookie', { Cookie: 'qwd.sid=s%3Aabc.def' }],
    ['a 4 KB CSRF cookie', { Cookie: `qwd.csrf=${'A'.repeat(4000)}` }], ['200 cookies', { Cookie: Array.from({ length: 200 }, (_, i) => `c${i}=${i}`).join('; ') }],
    ['Authorization: Bearer garbage', { Authorization: 'Bearer garbage' }], ['Authorization: Bearer (empty)', { Authorization: 'Bearer ' }],
    ['Authorization: Basic', { Authorization: 'Basic YWxpY2U6eA==' }], [`an unknown qwd_ token`, { Authorization: `Bearer qwd_${'A'.repeat(43)}` }],
    ['Accept: weird', { Accept: '\u0000/\u0000' }], ['Range on a page', { Range: 'bytes=0-1,2-3,4-5' }], ['If-None-Match garbage', { 'If-None-Match': '"' + 'x'.repeat(1000) }],
    ['Accept-Encoding weird', { 'Accept-Encoding': 'gzip;q=2, *;q=-1' }], ['Expect: 100-continue', { Expect: '100-continue' }], ['Expect: bogus', { Expect: 'bogus' }],
    ['a header with a NUL', { 'X-Nul': 'a\u0000b' }], ['Upgrade: websocket on a page', { Upgrade: 'websocket', Connection: 'Upgrade' }],
  ];
  for (const [title, headers, noHost] of headerCases) {
    for (const target of ['/', '/api/v1/sessions', `/s/${c.token}`]) add({ title: `${title} on ${target.replace(c.token, '<token>')}`, who: 'anon', method: 'GET', target, headers, noHost });
  }
  add({ title: 'Range on a static file', who: 'anon', method: 'GET', target: '/static/style.css', headers: { Range: 'bytes=999999-' }, expect: [416, 400, 200] });

  // CSRF tricks: each refused with QWD_CSRF (or the HTML page), none changes anything.
  const stopForm = `/s/${c.token}/stop`;
  add({ title: 'alice stop form without a token', who: 'alice', method: 'POST', target: stopForm, headers: { ...FORM_HEADERS, Accept: 'application/json' }, body: 'back=manage', expect: [403] });
  add({ title: 'alice stop form with bob\'s token', who: 'alice', method: 'POST', target: stopForm, headers: { ...FORM_HEADERS, Accept: 'application/json' }, body: 'bobcsrf', expect: [403] });
  add({ title: 'alice stop form with an anonymous token', who: 'alice', method: 'POST', target: stopForm, headers: { ...FORM_HEADERS, Accept: 'application/json' }, body: 'anoncsrf', expect: [403] });
  add({ title: 'alice stop form with the token in the query string', who: 'alice', method: 'POST', target: `${stopForm}?_csrf=alicecsrf`, headers: { ...FORM_HEADERS, Accept: 'application/json' }, body: 'back=manage', expect: [403] });
  add({ title: 'alice stop form with the token in X-CSRF-Token only', who: 'alice', method: 'POST', target: stopForm, headers: { ...FORM_HEADERS, Accept: 'application/json', 'X-CSRF-Token': 'alicecsrf' }, body: 'back=manage', expect: [403] });
  add({ title: 'alice stop form with the token twice', who: 'alice', method: 'POST', target: stopForm, headers: { ...FORM_HEADERS, Accept: 'application/json' }, body: '_csrf=alicecsrf&_csrf=alicecsrf', expect: [403] });
  add({ title: 'alice stop form with the token upper-cased', who: 'alice', method: 'POST', target: stopForm, headers: { ...FORM_HEADERS, Accept: 'application/json' }, body: 'ALICECSRF', expect: [403] });
  add({ title: 'alice stop form as text/plain', who: 'alice', method: 'POST', target: stopForm, headers: { 'Content-Type': 'text/plain', Accept: 'application/json' }, body: '_csrf=alicecsrf', expect: [403] });
  add({ title: 'alice stop form with _method=DELETE', who: 'alice', method: 'POST', target: `${stopForm}?_method=DELETE`, headers: { ...FORM_HEADERS, Accept: 'application/json' }, body: '_method=DELETE', expect: [403] });
  add({ title: 'alice API DELETE without X-CSRF-Token', who: 'alice', method: 'DELETE', target: `/api/v1/sessions/${c.token}`, headers: { Accept: 'application/json' }, expect: [403] });
  add({ title: 'alice API DELETE with the token in the body', who: 'alice', method: 'DELETE', target: `/api/v1/sessions/${c.token}`, headers: JSON_HEADERS, body: '{"_csrf":"alicecsrf"}', expect: [403] });
  add({ title: 'alice API DELETE with bob\'s token', who: 'alice', method: 'DELETE', target: `/api/v1/sessions/${c.token}`, headers: { Accept: 'application/json', 'X-CSRF-Token': 'bobcsrf' }, expect: [403] });
  add({ title: 'alice API DELETE with an anonymous token', who: 'alice', method: 'DELETE', target: `/api/v1/sessions/${c.token}`, headers: { Accept: 'application/json', 'X-CSRF-Token': 'anoncsrf' }, expect: [403] });
  add({ title: 'alice logout without a token', who: 'alice', method: 'POST', target: '/logout', headers: FORM_HEADERS, body: '', expect: [403] });
  add({ title: 'alice admin stop-all without a token', who: 'alice', method: 'POST', target: '/admin/stop-all', headers: FORM_HEADERS, body: 'confirm=yes', expect: [403] });
  add({ title: 'anonymous login with a token but no cookie', who: 'anon', method: 'POST', target: '/login', headers: FORM_HEADERS, body: 'user=alice&password=x&_csrf=anoncsrf', expect: [403] });
  add({ title: 'anonymous login with a forged 87-character token', who: 'anon', method: 'POST', target: '/login', headers: { ...FORM_HEADERS, Cookie: `qwd.csrf=${'A'.repeat(43)}.${'B'.repeat(43)}` }, body: `user=alice&password=x&_csrf=${'A'.repeat(43)}.${'B'.repeat(43)}`, expect: [403] });

  // Other users' tokens and rights: bob (logged in, valid CSRF) and bob's API token against alice's desktop.
  api('bob DELETEs alice\'s desktop', 'bob', 'DELETE', `/api/v1/sessions/${c.token}`, undefined, [403]);
  api('bob extends alice\'s desktop', 'bob', 'POST', `/api/v1/sessions/${c.token}/extend`, '{"byS":60}', [403]);
  api('bob revokes alice\'s link', 'bob', 'POST', `/api/v1/sessions/${c.token}/revoke`, '{"link":"control"}', [403]);
  api('bob\'s API token DELETEs alice\'s desktop', 'bobToken', 'DELETE', `/api/v1/sessions/${c.token}`, undefined, [403]);
  api('bob\'s API token extends alice\'s desktop', 'bobToken', 'POST', `/api/v1/sessions/${c.token}/extend`, '{"byS":60}', [403]);
  api('the view token DELETEs', 'alice', 'DELETE', `/api/v1/sessions/${c.viewToken}`, undefined, [403]);
  api('the view token extends', 'alice', 'POST', `/api/v1/sessions/${c.viewToken}/extend`, '{"byS":60}', [403]);
  api('the view token revokes the control link', 'alice', 'POST', `/api/v1/sessions/${c.viewToken}/revoke`, '{"link":"control"}', [403]);
  api('an anonymous script DELETEs alice\'s desktop', 'anon', 'DELETE', `/api/v1/sessions/${c.token}`, undefined, [401, 403]);
  api('an anonymous script reads alice\'s desktop', 'anon', 'GET', `/api/v1/sessions/${c.token}`, undefined, [401]);
  api('an anonymous script lists desktops', 'anon', 'GET', '/api/v1/sessions', undefined, [401]);
  api('an anonymous script creates a desktop', 'anon', 'POST', '/api/v1/sessions', JSON.stringify({ ...good, user: 'eve' }), [401]);
  for (const [form, fields] of [[`/s/${c.token}/stop`, ''], [`/s/${c.token}/extend`, ''], [`/s/${c.token}/revoke/control`, ''], [`/s/${c.token}/revoke/view`, ''], ['/admin/stop-all', 'confirm=yes']] as const) {
    add({ title: `bob posts ${form.replace(c.token, '<token>')}`, who: 'bob', method: 'POST', target: form, headers: FORM_HEADERS, body: fields, csrf: true, expect: [403] });
    add({ title: `anonymous posts ${form.replace(c.token, '<token>')}`, who: 'anon', method: 'POST', target: form, headers: FORM_HEADERS, body: fields, expect: [403] });
  }
  add({ title: 'alice revokes an unknown link kind', who: 'alice', method: 'POST', target: `/s/${c.token}/revoke/both`, headers: FORM_HEADERS, body: '', csrf: true, expect: [400] });
  add({ title: 'alice stops through the view link', who: 'alice', method: 'POST', target: `/s/${c.viewToken}/stop`, headers: FORM_HEADERS, body: '', csrf: true, expect: [403] });
  add({ title: 'alice posts stop-all (not an admin)', who: 'alice', method: 'POST', target: '/admin/stop-all', headers: FORM_HEADERS, body: 'confirm=yes', csrf: true, expect: [403] });

  // Every other endpoint and form with bad input.
  add({ title: 'login with a wrong password', who: 'anon', method: 'POST', target: '/login', headers: FORM_HEADERS, body: 'user=alice&password=wrong-one', csrf: true, expect: [401, 429] });
  add({ title: 'login with a 10,000-character name', who: 'anon', method: 'POST', target: '/login', headers: FORM_HEADERS, body: `user=${'a'.repeat(10000)}&password=x`, csrf: true, expect: [401, 429] });
  add({ title: 'login with unicode', who: 'anon', method: 'POST', target: '/login', headers: FORM_HEADERS, body: 'user=%E2%80%AEalice&password=%00', csrf: true, expect: [401, 429] });
  add({ title: 'login by e-mail where it is not configured', who: 'anon', method: 'POST', target: '/login/email', headers: FORM_HEADERS, body: 'email=a@b.org', csrf: true, expect: [400] });
  add({ title: 'a login link that does not exist (POST)', who: 'anon', method: 'POST', target: `/login/email/${'A'.repeat(43)}`, headers: FORM_HEADERS, body: '', csrf: true, expect: [410] });
  add({ title: 'a login link that does not exist (GET)', who: 'anon', method: 'GET', target: `/login/email/${'A'.repeat(43)}`, expect: [410] });
  add({ title: 'the create form with bad fields', who: 'alice', method: 'POST', target: '/sessions', headers: FORM_HEADERS, body: 'machine=..%2F..%2Fetc&cpus=1+-display+sdl', csrf: true, expect: [400] });
  add({ title: 'the create form with an unknown machine', who: 'alice', method: 'POST', target: '/sessions', headers: FORM_HEADERS, body: 'machine=windows', csrf: true, expect: [404] });
  add({ title: 'the create form with a huge lifetime', who: 'alice', method: 'POST', target: '/sessions', headers: FORM_HEADERS, body: 'machine=blank&lifetimeS=99999999999', csrf: true, expect: [400] });
  add({ title: 'GET /api/v1/machines', who: 'anon', method: 'GET', target: '/api/v1/machines', expect: [200] });
  add({ title: 'GET /api/v1/nothing', who: 'anon', method: 'GET', target: '/api/v1/nothing', expect: [404] });
  add({ title: 'POST /api/v1/machines', who: 'bobToken', method: 'POST', target: '/api/v1/machines', headers: JSON_HEADERS, body: '{}', expect: [404] });
  add({ title: 'anonymous /manage', who: 'anon', method: 'GET', target: '/manage', expect: [303] });
  add({ title: 'anonymous viewer page', who: 'anon', method: 'GET', target: `/s/${c.token}/view`, expect: [303] });
  return cases;
}

test('the HTTP abuse corpus: no 5xx, QWD_* codes, and nothing left behind (files, processes, rows, memory, tokens in the log)', async (t) => {
  const setup = makeSetup(t, { auth: { backends: [{ type: 'local' }], rateLimit: { maxFailures: 3, anonymousPagesPerMinute: 0 } } });
  const { broker, logFile, flushed } = await startLoggingBroker(t, setup.config, setup.dir);
  const { users, db, rows } = broker.services;
  for (const name of ['alice', 'bob']) users.add({ name, hash: await hashPassword(`${name}-Secret-4711`), email: null, admin: false, createdAt: Date.now() });
  const bobApi = newApiToken();
  users.addApiToken(bobApi.id, hashToken(bobApi.token), 'bob', false, Date.now());
  const secrets = new SecretCollector();
  secrets.add(bobApi.token);
  const login = async (name: string) => {
    const b = new WebClient(broker.url);
    secrets.addFrom((await b.get('/login')).text);
    t.is((await b.post('/login', { user: name, password: `${name}-Secret-4711` })).status, 303);
    secrets.addFrom((await b.get('/')).text);
    secrets.addCookies(b.cookie);
    return b;
  };
  const alice = await login('alice');
  const bob = await login('bob');
  const anon = new WebClient(broker.url);
  await anon.get('/login');
  secrets.addCookies(anon.cookie);
  secrets.add(anon.csrf);
  const created = await alice.api('POST', '/api/v1/sessions', good, { withCsrf: true });
  t.is(created.status, 201);
  secrets.addFrom(JSON.stringify(created.json));
  const ctx: Ctx = { token: created.json.token, viewToken: new URL(created.json.viewUrl).pathname.split('/')[2]! };
  const cases = corpus(ctx);
  t.true(cases.length >= 150, `${cases.length} cases`);

  const cookieOf: Record<Who, string> = { anon: '', alice: alice.cookie, bob: bob.cookie, bobToken: '' };
  const csrfOf: Record<Who, string> = { anon: anon.csrf, alice: alice.csrf, bob: bob.csrf, bobToken: '' };
  const substitute = (text: string) => text.replace(/alicecsrf/g, alice.csrf).replace(/ALICECSRF/g, `_csrf=${alice.csrf.toUpperCase()}`)
    .replace(/^bobcsrf$/, `_csrf=${bob.csrf}`).replace(/bobcsrf/g, bob.csrf).replace(/^anoncsrf$/, `_csrf=${anon.csrf}`).replace(/anoncsrf/g, anon.csrf);
  const send = async (c: Case): Promise<RawAnswer> => {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(c.headers ?? {})) headers[k] = substitute(v);
    if (cookieOf[c.who] && !Object.keys(headers).some((h) => h.toLowerCase() === 'cookie')) headers.Cookie = cookieOf[c.who];
    if (c.who === 'anon' && c.csrf) headers.Cookie = anon.cookie;
    if (c.who === 'bobToken') headers.Authorization = `Bearer ${bobApi.token}`;
    let body = typeof c.body === 'string' ? substitute(c.body) : c.body;
    if (c.csrf && c.target.startsWith('/api/')) headers['X-CSRF-Token'] = csrfOf[c.who];
    else if (c.csrf) body = `${body ? `${body}&` : ''}_csrf=${encodeURIComponent(csrfOf[c.who])}`;
    return rawRequest(broker.url, c.method, substitute(c.target), { headers, body, noHost: c.noHost });
  };

  const runTable = async (): Promise<string[]> => {
    const failures: string[] = [];
    for (const c of cases) {
      let res: RawAnswer;
      try {
        res = await send(c);
      } catch (err) {
        failures.push(`${c.title}: ${(err as Error).message}`);
        continue;
      }
      if (res.status >= 500 || res.status < 200) failures.push(`${c.title}: status ${res.status}`);
      else if (c.expect && !c.expect.includes(res.status)) failures.push(`${c.title}: status ${res.status}, expected ${c.expect.join('/')}: ${res.body.slice(0, 120)}`);
      if (res.status >= 400 && /application\/json/.test(res.headers['content-type'] ?? '')) {
        let code = '';
        try {
          code = (JSON.parse(res.body) as { error: { code: string } }).error.code;
        } catch {
          code = '(not JSON)';
        }
        if (!/^QWD_[A-Z_]+$/.test(code)) failures.push(`${c.title}: JSON error without a QWD_ code: ${res.body.slice(0, 120)}`);
      }
    }
    return failures;
  };

  const listFiles = (dir: string): string[] => (fs.existsSync(dir) ? fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }).map((f) => path.join(dir, f)).sort() : []);
  const filesBefore = [...listFiles(setup.stateDir), ...listFiles(setup.config.runDir)];
  const qemuBefore = pidsMentioning(setup.stateDir);
  const count = (table: string) => (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
  const sessionsBefore = rows.all().length;
  const webSessionsBefore = count('web_sessions');

  t.deepEqual(await runTable(), [], 'first pass');
  const rssWarm = await settledRss();
  t.deepEqual(await runTable(), [], 'second pass');
  const rssAfter = await settledRss();

  t.deepEqual([...listFiles(setup.stateDir), ...listFiles(setup.config.runDir)], filesBefore, 'no file left in the state and run dirs');
  t.deepEqual(pidsMentioning(setup.stateDir), qemuBefore, 'no QEMU started (alice\'s desktop still the only one)');
  t.is(rows.all().length, sessionsBefore, 'no session row');
  t.is(count('web_sessions'), webSessionsBefore, 'no browser-session row');
  t.log(`${cases.length} cases, twice; RSS ${(rssWarm / 2 ** 20).toFixed(1)} MiB warmed up, ${(rssAfter / 2 ** 20).toFixed(1)} MiB after`);
  t.true(rssAfter <= rssWarm * 1.1, `RSS ${Math.round(rssAfter / 2 ** 20)} MiB after, ${Math.round(rssWarm / 2 ** 20)} MiB before the second pass`);
  t.is((await alice.api('GET', `/api/v1/sessions/${ctx.token}`)).json.state, 'running', 'alice\'s desktop is untouched');
  await flushed();
  secrets.addCookies(alice.cookie);
  assertNoTokenInLog(t, logFile, secrets.secrets);
});

/** RSS after a full GC, once the event loop has settled. */
async function settledRss(): Promise<number> {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setImmediate(r));
    gc();
  }
  return process.memoryUsage().rss;
}
