// QEMU's option syntax (QemuOpts / keyval): "key=value,key=value". A comma
// inside a value must be doubled; everything else is passed verbatim because
// QEMU is spawned with an argv array, never through a shell.

export function escapeOptionValue(value: string): string {
  if (/[\0\n\r]/.test(value)) {
    throw new Error(`refusing a QEMU option value with a control character: ${JSON.stringify(value)}`);
  }
  return value.replaceAll(',', ',,');
}

/** Builds "k=v,k=v" with every value escaped; keys are our own constants. */
export function qemuOpts(first: string, pairs: Record<string, string | number | boolean | undefined> = {}): string {
  const parts = [first];
  for (const [key, value] of Object.entries(pairs)) {
    if (value === undefined) continue;
    const text = typeof value === 'boolean' ? (value ? 'on' : 'off') : String(value);
    parts.push(`${key}=${escapeOptionValue(text)}`);
  }
  return parts.join(',');
}
