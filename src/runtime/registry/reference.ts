// The grammar itself is pure and lives in lib (manifest loading needs it without the runtime).
export { parseReference, DEFAULT_DOMAIN, type ImageReference } from '../../lib/reference.js';

/** True for hosts where plain HTTP is allowed without configuration: loopback only. */
export function isLoopbackHost(domain: string): boolean {
  const host = domain.startsWith('[') ? domain.slice(1, domain.indexOf(']')) : (domain.split(':')[0] ?? '');
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
