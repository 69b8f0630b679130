import { describe, expect, it } from 'vitest';
import { holderIsGone, processIsAlive } from '../src/replication-lock.js';

describe('replication lease holder judged gone (issue 12 item 1)', () => {
  const self = { host: 'pod-a', pid: 1, holderIds: new Set(['pod-a:1:current']) };
  const alive = (pids: number[]) => (pid: number) => pids.includes(pid);

  it('a holder on this host whose pid is not alive is gone', () => {
    expect(holderIsGone({ holder: 'pod-a:42:old', host: 'pod-a', pid: 42 }, self, alive([]))).toBe(true);
    expect(holderIsGone({ holder: 'pod-a:42:old', host: 'pod-a', pid: 42 }, self, alive([42]))).toBe(false);
  });

  it('a restarted container reusing the pid of its previous incarnation takes over at once', () => {
    expect(holderIsGone({ holder: 'pod-a:1:previous', host: 'pod-a', pid: 1 }, self, alive([1]))).toBe(true);
  });

  it('never judges its own holder ids, another host, or a lease without a pid', () => {
    expect(holderIsGone({ holder: 'pod-a:1:current', host: 'pod-a', pid: 1 }, self, alive([]))).toBe(false);
    expect(holderIsGone({ holder: 'pod-b:42:x', host: 'pod-b', pid: 42 }, self, alive([]))).toBe(false);
    expect(holderIsGone({ holder: 'old-version', host: undefined, pid: undefined }, self, alive([]))).toBe(false);
  });

  it('processIsAlive tells this process from a pid that does not exist', () => {
    expect(processIsAlive(process.pid)).toBe(true);
    expect(processIsAlive(2 ** 22 + 12_345)).toBe(false); // above Linux's pid_max limit
  });
});
