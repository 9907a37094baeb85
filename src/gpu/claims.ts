// Which passable GPU units are free, and who holds one, given the claimed PCI
// functions from the store (function address → session id). Pure. A unit is
// held as soon as any of its functions is: the IOMMU group is the unit of
// passthrough, so a group is never handed out twice, even when the sysfs view
// changed between two discoveries (a device rebound, a unit listed differently).
import type { GpuDevice } from './discover.js';

/** Function address → id of the session holding it. */
export type HeldFunctions = ReadonlyMap<string, string>;

export function holderOf(gpu: Pick<GpuDevice, 'functions'>, held: HeldFunctions): string | null {
  for (const fn of gpu.functions) {
    const holder = held.get(fn.address);
    if (holder !== undefined) return holder;
  }
  return null;
}

/** Usable units none of whose functions is claimed, in discovery order. */
export function freeGpus<T extends Pick<GpuDevice, 'functions' | 'usable'>>(
  gpus: readonly T[], held: HeldFunctions,
): T[] {
  return gpus.filter((g) => g.usable && holderOf(g, held) === null);
}
