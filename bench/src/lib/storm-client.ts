import http from 'node:http';

/** What the storm's client is asked to do (it may run in a worker thread: plain data only). */
export interface StormSpec {
  url: string;
  token: string;
  clients: number;
}

/**
 * The storm's client side: `clients` distinct clients each send one checkpoint request, spread over one second, over
 * keep-alive connections (at most 256 sockets). A 429 from the route's limiter is retried after 10–50 ms, as SDKs
 * do. Wall time runs from the first send to the last answer.
 */
export async function stormRequests(spec: StormSpec): Promise<{ wallMs: number; rejected429: number }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  let rejected429 = 0;
  try {
    const url = new URL(`${spec.url}/sync/checkpoint-request`);
    const post = (clientId: string) =>
      new Promise<number>((resolve, reject) => {
        const request = http.request(
          url,
          {
            method: 'POST',
            agent,
            headers: { 'Content-Type': 'application/json', Authorization: `Token ${spec.token}` }
          },
          (response) => {
            response.resume();
            response.on('end', () => resolve(response.statusCode ?? 0));
          }
        );
        request.on('error', reject);
        request.end(JSON.stringify({ client_id: clientId, checkpoint_request_id: '1' }));
      });
    const started = performance.now();
    await Promise.all(
      Array.from({ length: spec.clients }, async (_, index) => {
        await new Promise((resolve) => setTimeout(resolve, (index / spec.clients) * 1000));
        for (;;) {
          const status = await post(`c${index}`);
          if (status === 200) return;
          if (status !== 429) throw new Error(`storm request answered ${status}`);
          rejected429++;
          await new Promise((resolve) => setTimeout(resolve, 10 + Math.random() * 40));
        }
      })
    );
    return { wallMs: performance.now() - started, rejected429 };
  } finally {
    agent.destroy();
  }
}
