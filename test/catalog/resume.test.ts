// Pure decisions about continuing a partial download (src/catalog/resume.ts).
import test from 'ava';
import { decideResponse, ifRangeValidator, parseContentRange, planRequest, type PartialMeta, type ResponseFacts } from '../../src/catalog/resume.js';

const URL_A = 'http://mirror.example.org/debian.qcow2';
const META: PartialMeta = { url: URL_A, etag: '"abc"', lastModified: 'Tue, 01 Oct 2024 10:00:00 GMT', totalBytes: 1000 };

test('a partial is continued only with a validator for If-Range, from the same URL, and while incomplete', (t) => {
  t.deepEqual(planRequest(URL_A, 0, null), { fromBytes: 0, headers: {}, discardReason: null });
  t.deepEqual(planRequest(URL_A, 400, META), { fromBytes: 400, headers: { range: 'bytes=400-', 'if-range': '"abc"' }, discardReason: null });
  const cases: Array<[string, number, PartialMeta | null, RegExp]> = [
    ['no meta', 400, null, /nothing records/],
    ['other url', 400, { ...META, url: 'http://elsewhere/x' }, /downloaded from http:\/\/elsewhere\/x/],
    ['no validator', 400, { ...META, etag: null, lastModified: null }, /no ETag or Last-Modified/],
    ['weak etag only', 400, { ...META, etag: 'W/"abc"', lastModified: null }, /no ETag or Last-Modified/],
    ['already complete', 1000, META, /already 1000 bytes of a 1000-byte file/],
  ];
  for (const [title, size, meta, reason] of cases) {
    const plan = planRequest(URL_A, size, meta);
    t.is(plan.fromBytes, 0, title);
    t.deepEqual(plan.headers, {}, title);
    t.regex(plan.discardReason ?? '', reason, title);
  }
});

test('If-Range uses a strong ETag, else Last-Modified (a weak ETag is never sent)', (t) => {
  t.is(ifRangeValidator({ etag: '"abc"', lastModified: 'x' }), '"abc"');
  t.is(ifRangeValidator({ etag: 'W/"abc"', lastModified: 'Tue, 01 Oct 2024 10:00:00 GMT' }), 'Tue, 01 Oct 2024 10:00:00 GMT');
  t.is(ifRangeValidator({ etag: null, lastModified: null }), null);
});

test('Content-Range is parsed per RFC 9110 §14.4 and nonsense is refused', (t) => {
  t.deepEqual(parseContentRange('bytes 400-999/1000'), { firstByte: 400, lastByte: 999, totalBytes: 1000 });
  t.deepEqual(parseContentRange('bytes 400-999/*'), { firstByte: 400, lastByte: 999, totalBytes: null });
  for (const bad of [null, '', 'bytes */1000', 'bytes 500-400/1000', 'bytes 0-1000/1000', 'items 0-1/2']) t.is(parseContentRange(bad), null, String(bad));
});

test('an answer to a resume is appended only when it continues the partial exactly', (t) => {
  const plan = { fromBytes: 400 };
  const ok: ResponseFacts = { status: 206, contentRange: 'bytes 400-999/1000', contentLengthBytes: 600, etag: '"abc"' };
  t.deepEqual(decideResponse(plan, META, ok), { action: 'write', fromBytes: 400, totalBytes: 1000, note: null });
  t.deepEqual(decideResponse(plan, META, { ...ok, etag: null }), { action: 'write', fromBytes: 400, totalBytes: 1000, note: null }, 'no ETag on the 206: Content-Range alone decides');
  const whole = decideResponse(plan, META, { status: 200, contentRange: null, contentLengthBytes: 1200, etag: '"new"' });
  t.like(whole, { action: 'write', fromBytes: 0, totalBytes: 1200 }, 'a 200 to a resume rewrites from the start');
  const rejected: Array<[string, Partial<ResponseFacts>, RegExp]> = [
    ['starts elsewhere', { contentRange: 'bytes 0-599/1000' }, /expected bytes 400-…\/1000/],
    ['not to the end', { contentRange: 'bytes 400-499/1000', contentLengthBytes: 100 }, /not the rest of the file/],
    ['other total', { contentRange: 'bytes 400-1199/1200', contentLengthBytes: 800 }, /changed size/],
    ['no Content-Range', { contentRange: null }, /unusable Content-Range null/],
    ['length disagrees', { contentLengthBytes: 10 }, /Content-Length 10/],
    ['server error', { status: 503 }, /HTTP 503/],
  ];
  for (const [title, change, reason] of rejected) {
    const d = decideResponse(plan, META, { ...ok, ...change });
    t.is(d.action, 'reject', title);
    t.regex((d as { reason: string }).reason, reason, title);
  }
  t.like(decideResponse(plan, META, { ...ok, etag: '"other"' }), { action: 'restart' }, 'a 206 of a file with another ETag is not spliced');
  t.like(decideResponse(plan, META, { status: 416, contentRange: 'bytes */1000', contentLengthBytes: 0, etag: null }), { action: 'restart' });
  t.like(decideResponse({ fromBytes: 0 }, null, { status: 416, contentRange: null, contentLengthBytes: 0, etag: null }), { action: 'reject' }, '416 to a plain request is an error, not a loop');
});
