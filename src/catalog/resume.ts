// Deciding whether a partial download may be continued, and whether the
// server's answer really continues the same file. Pure: partial-file facts
// and response headers in, a decision out; download.ts does the I/O.
//
// RFC 9110 §13.1.5 (If-Range): a resumed request carries the validator the
// first answer gave (a strong ETag, else Last-Modified); a server whose file
// changed answers 200 with the whole new file instead of 206. §14.4
// (Content-Range): a 206 says which bytes it carries and, usually, the full
// length; we accept it only when it starts exactly where the partial ends and
// the full length is the one the partial was cut from. Anything else would
// splice two different files together.

/** Kept next to a partial download as "<image>.part.json". */
export interface PartialMeta {
  url: string;
  /** ETag of the answer that started the partial (null: none given). */
  etag: string | null;
  /** Last-Modified of that answer (null: none given). */
  lastModified: string | null;
  /** Full length of the file the partial is part of (null: not known). */
  totalBytes: number | null;
}

export interface RequestPlan {
  /** First byte to ask for: 0 means a fresh download (no Range). */
  fromBytes: number;
  headers: Record<string, string>;
  /** Why an existing partial is not continued, if it is not. */
  discardReason: string | null;
}

/** The If-Range value for a partial: a strong ETag, else Last-Modified, else none. */
export function ifRangeValidator(meta: Pick<PartialMeta, 'etag' | 'lastModified'>): string | null {
  // RFC 9110 §13.1.5: "A client MUST NOT generate an If-Range header field
  // containing an entity tag that is marked as weak."
  if (meta.etag && !meta.etag.startsWith('W/')) return meta.etag;
  return meta.lastModified ?? null;
}

/** What to ask for, given the partial file on disk (size 0: none) and its meta (null: none or unreadable). */
export function planRequest(url: string, partSizeBytes: number, meta: PartialMeta | null): RequestPlan {
  if (partSizeBytes === 0) return { fromBytes: 0, headers: {}, discardReason: null };
  if (!meta) return { fromBytes: 0, headers: {}, discardReason: 'nothing records which file it is part of' };
  if (meta.url !== url) return { fromBytes: 0, headers: {}, discardReason: `it was downloaded from ${meta.url}` };
  const validator = ifRangeValidator(meta);
  if (!validator) {
    return {
      fromBytes: 0, headers: {},
      discardReason: 'the server gave no ETag or Last-Modified to check that the file is unchanged',
    };
  }
  if (meta.totalBytes !== null && partSizeBytes >= meta.totalBytes) {
    return {
      fromBytes: 0, headers: {},
      discardReason: `it is already ${partSizeBytes} bytes of a ${meta.totalBytes}-byte file`,
    };
  }
  return {
    fromBytes: partSizeBytes, headers: { range: `bytes=${partSizeBytes}-`, 'if-range': validator }, discardReason: null,
  };
}

export interface ContentRange {
  firstByte: number;
  lastByte: number;
  /** null: the server wrote "*" (length unknown). */
  totalBytes: number | null;
}

/** "bytes 100-199/1000" or "bytes 100-199/*" (RFC 9110 §14.4); null when not that shape. */
export function parseContentRange(value: string | null): ContentRange | null {
  const m = /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(value ?? '');
  if (!m) return null;
  const range = { firstByte: Number(m[1]), lastByte: Number(m[2]), totalBytes: m[3] === '*' ? null : Number(m[3]) };
  if (range.lastByte < range.firstByte || (range.totalBytes !== null && range.lastByte >= range.totalBytes)) {
    return null;
  }
  return range;
}

export interface ResponseFacts {
  status: number;
  contentRange: string | null;
  /** null: no (or no usable) Content-Length. */
  contentLengthBytes: number | null;
  etag: string | null;
}

export type ResponseDecision =
  /** Write the body at fromBytes (0: truncate the partial first). */
  | { action: 'write'; fromBytes: number; totalBytes: number | null; note: string | null }
  /** Drop the partial and ask again for the whole file. */
  | { action: 'restart'; reason: string }
  /** The answer cannot be used; say why. */
  | { action: 'reject'; reason: string };

/** What to do with the answer to a request planned by planRequest. */
export function decideResponse(
  plan: Pick<RequestPlan, 'fromBytes'>, meta: PartialMeta | null, res: ResponseFacts,
): ResponseDecision {
  const resuming = plan.fromBytes > 0;
  if (res.status === 200) {
    return {
      action: 'write', fromBytes: 0, totalBytes: res.contentLengthBytes,
      note: resuming
        ? 'the server sent the whole file (it changed since the partial download, or it does not resume)'
        : null,
    };
  }
  if (res.status === 416 && resuming) {
    return { action: 'restart', reason: 'the server cannot continue at that offset (HTTP 416)' };
  }
  if (res.status !== 206) return { action: 'reject', reason: `the server answered HTTP ${res.status}` };
  const range = parseContentRange(res.contentRange);
  if (!range) {
    return {
      action: 'reject',
      reason: `the server answered 206 with an unusable Content-Range ${JSON.stringify(res.contentRange)}`,
    };
  }
  const expected = `bytes ${plan.fromBytes}-…${meta?.totalBytes != null ? `/${meta.totalBytes}` : ''}`;
  if (range.firstByte !== plan.fromBytes) {
    return {
      action: 'reject',
      reason: `the server answered 206 with Content-Range "${res.contentRange}", expected ${expected}`,
    };
  }
  if (range.totalBytes !== null && range.lastByte !== range.totalBytes - 1) {
    return {
      action: 'reject',
      reason: `the server answered 206 with Content-Range "${res.contentRange}", not the rest of the file`,
    };
  }
  if (resuming && range.totalBytes !== null && meta?.totalBytes != null && range.totalBytes !== meta.totalBytes) {
    return {
      action: 'reject',
      reason: `the server answered 206 with Content-Range "${res.contentRange}", expected ${expected}: the file ` +
        `changed size`,
    };
  }
  if (res.contentLengthBytes !== null && res.contentLengthBytes !== range.lastByte - range.firstByte + 1) {
    return {
      action: 'reject',
      reason: `the server answered 206 with Content-Range "${res.contentRange}" but Content-Length ` +
        `${res.contentLengthBytes}`,
    };
  }
  // A server that ignores If-Range still names the file it sends: a different
  // ETag means a different file, whatever the range says.
  if (resuming && meta?.etag && res.etag && res.etag !== meta.etag) {
    return { action: 'restart', reason: `the file changed (ETag ${meta.etag}, now ${res.etag})` };
  }
  return {
    action: 'write', fromBytes: plan.fromBytes, totalBytes: range.totalBytes ?? meta?.totalBytes ?? null, note: null,
  };
}
