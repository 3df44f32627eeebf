/**
 * An httpGet probe as the kubelet's prober runs it (pkg/probe/http): GET with the probe's
 * headers, success for 200–399. Redirects to the same host name are followed, at most 10 (then
 * the probe fails); a redirect elsewhere is not followed and counts as success (the kubelet's
 * "Probe terminated redirects" warning). The timeout covers the whole exchange, redirects
 * included. Plain HTTP only (berth refuses `scheme: HTTPS` at load).
 */
export async function httpCheck(host: string, port: number, pathname: string, headers: readonly { name: string; value: string }[], timeoutMs: number): Promise<{ ok: boolean; message: string }> {
  const http = await import('node:http');
  const first = new URL(`http://${host.includes(':') ? `[${host}]` : host}:${port}${pathname}`);
  const deadline = Date.now() + timeoutMs;
  const get = (url: URL): Promise<{ status: number; location?: string } | { error: string }> =>
    new Promise((resolve) => {
      const left = Math.max(1, deadline - Date.now());
      const req = http.get(url, { headers: { 'User-Agent': 'berth-probe', Accept: '*/*', ...Object.fromEntries(headers.map((x) => [x.name, x.value])) }, timeout: left }, (res) => {
        res.resume();
        const location = res.headers.location;
        resolve({ status: res.statusCode ?? 0, ...(location !== undefined ? { location } : {}) });
      });
      req.on('timeout', () => {
        req.destroy();
        resolve({ error: `timeout after ${timeoutMs} ms` });
      });
      req.on('error', (e) => resolve({ error: e.message }));
    });
  let url = first;
  for (let redirects = 0; ; redirects++) {
    const r = await get(url);
    if ('error' in r) return { ok: false, message: `GET ${url.href}: ${r.error}` };
    const { status } = r;
    if (status >= 300 && status < 400 && r.location !== undefined) {
      let next: URL;
      try {
        next = new URL(r.location, url);
      } catch {
        return { ok: true, message: `GET ${url.href}: HTTP ${status} (probe terminated redirects: bad Location)` };
      }
      if (next.protocol !== 'http:' || next.hostname !== first.hostname) return { ok: true, message: `GET ${url.href}: HTTP ${status} (probe terminated redirects: ${next.href})` };
      if (redirects >= 10) return { ok: false, message: `GET ${first.href}: stopped after 10 redirects` };
      url = next;
      continue;
    }
    return { ok: status >= 200 && status < 400, message: `GET ${url.href}: HTTP ${status}` };
  }
}
