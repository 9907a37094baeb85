// The viewer's per-browser settings (localStorage): picture quality and
// compression (noVNC qualityLevel / compressionLevel, 0-9) and the size mode.
// A browser that refuses storage (private mode, blocked) gets the defaults.

const PREFIX = 'qwd.viewer.';

// The size mode is kept apart for desktops that can follow the window (scalingRemote) and those that cannot
// (scaling): "fit" chosen on one that cannot must not take remote resize away from one that can.
export const DEFAULTS = Object.freeze({ quality: 6, compression: 2, scaling: 'fit', scalingRemote: 'remote' });

const sizeMode = (v) => v === 'fit' || v === 'native' || v === 'remote';
const VALID = {
  quality: (v) => Number.isInteger(v) && v >= 0 && v <= 9,
  compression: (v) => Number.isInteger(v) && v >= 0 && v <= 9,
  scaling: sizeMode,
  scalingRemote: sizeMode,
};

export function readSetting(name, fallback = DEFAULTS[name]) {
  let raw = null;
  try {
    raw = localStorage.getItem(PREFIX + name);
  } catch {
    return fallback; // storage refused: the defaults it is
  }
  if (raw === null) return fallback;
  const value = name === 'scaling' || name === 'scalingRemote' ? raw : Number(raw);
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
