import type { DesiredContainer, DesiredPod } from './desired.js';

/**
 * The kubelet's resource classes for a pod (pkg/apis/core/v1/helper/qos, pkg/kubelet/qos):
 * Guaranteed when every container has CPU and memory limits equal to its requests, BestEffort
 * when no container asks for or limits anything, Burstable otherwise. A missing request is its
 * limit (the API server's defaulting).
 */
export type QosClass = 'Guaranteed' | 'Burstable' | 'BestEffort';

const memRequest = (c: DesiredContainer): number | undefined => c.memoryRequestBytes ?? c.memoryBytes;
const cpuRequest = (c: DesiredContainer): number | undefined => c.cpuRequestMillis ?? c.cpuMillis;

export function qosClass(pod: DesiredPod): QosClass {
  const all = [...(pod.initContainers ?? []), ...pod.containers];
  if (all.every((c) => memRequest(c) === undefined && cpuRequest(c) === undefined && c.memoryBytes === undefined && c.cpuMillis === undefined)) return 'BestEffort';
  const guaranteed = all.every((c) => c.memoryBytes !== undefined && c.cpuMillis !== undefined && memRequest(c) === c.memoryBytes && cpuRequest(c) === c.cpuMillis);
  return guaranteed ? 'Guaranteed' : 'Burstable';
}

/** The kubelet's GetContainerOOMScoreAdjust: -997, 1000, or 1000 − 1000·request/capacity within [3, 999]. */
export function oomScoreAdj(pod: DesiredPod, c: DesiredContainer, memoryCapacityBytes: number): number {
  const q = qosClass(pod);
  if (q === 'Guaranteed') return -997;
  if (q === 'BestEffort') return 1000;
  const req = memRequest(c) ?? 0;
  let adj = 1000 - Math.trunc((1000 * req) / memoryCapacityBytes);
  if (adj < 3) adj = 3;
  if (adj >= 1000) adj = 999;
  return adj;
}

/** The kubelet's MilliCPUToShares: the CPU request as cgroup v1 shares (at least 2; none asked: 2). */
export function cpuShares(c: DesiredContainer): number {
  const milli = cpuRequest(c);
  if (milli === undefined || milli === 0) return 2;
  return Math.max(2, Math.trunc((milli * 1024) / 1000));
}
