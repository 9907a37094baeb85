// The viewer's per-browser settings (localStorage): picture quality and
// compression (noVNC qualityLevel / compressionLevel, 0-9) and the size mode.
// A browser that refuses storage (private mode, blocked) gets the defaults.

const PREFIX = 'qwd.viewer.';

export const DEFAULTS = Object.freeze({ quality: 6, compression: 2, scaling: 'fit' });

const VALID = {
  quality: (v) => Number.isInteger(v) && v >= 0 && v <= 9,
  compression: (v) => Number.isInteger(v) && v >= 0 && v <= 9,
  scaling: (v) => v === 'fit' || v === 'native' || v === 'remote',
};

export function readSetting(name, fallback = DEFAULTS[name]) {
  let raw = null;
  try {
    raw = localStorage.getItem(PREFIX + name);
  } catch {
    return fallback; // storage refused: the defaults it is
  }
  if (raw === null) return fallback;
  const value = name === 'scaling' ? raw : Number(raw);
  return VALID[name](value) ? value : fallback;
}

export function writeSetting(name, value) {
  if (!VALID[name](value)) return;
  try {
    localStorage.setItem(PREFIX + name, String(value));
  } catch {
    // Storage refused (private mode, quota): the setting holds for this page only.
  }
}
