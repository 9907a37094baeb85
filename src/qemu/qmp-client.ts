// A QMP client (QEMU Machine Protocol, docs/interop/qmp-spec): connect to the
// Unix socket, read the greeting, negotiate with qmp_capabilities, then send
// commands with an "id" and route each reply to its caller; asynchronous events
// are emitted as 'event'. Every wait has a timeout. Not a general-purpose
// library: just what the broker needs (quit, query-status, balloon, …).
import net from 'node:net';
import { EventEmitter } from 'node:events';
import { QwdError } from '../errors.js';
import { systemClock, type CancelTimer, type Clock } from '../clock.js';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  cancelTimer: CancelTimer;
  command: string;
}

type State = 'connecting' | 'greeted' | 'ready' | 'closed';

export class QmpClient extends EventEmitter {
  private state: State = 'connecting';
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private greetingWaiter: { resolve: () => void; reject: (err: Error) => void } | null = null;

  private constructor(
    private readonly socket: net.Socket, private readonly where: string, private readonly clock: Clock,
  ) {
    super();
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on(
      'error', (err) => this.fail(new QwdError('QWD_QMP_ERROR', `QMP ${where}: ${err.message}`, { cause: err })),
    );
    socket.on('close', () => this.fail(new QwdError('QWD_QMP_ERROR', `QMP ${where}: connection closed`)));
  }

  /**
   * Connects and completes the capabilities negotiation (greeting → qmp_capabilities). The clock (the system clock
   * by default) runs this client's timeouts.
   */
  static async connect(socketPath: string, opts: { timeoutMs?: number; clock?: Clock } = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const clock = opts.clock ?? systemClock;
    const socket = net.createConnection(socketPath);
    const client = new QmpClient(socket, socketPath, clock);
    try {
      await withTimeout(
        new Promise<void>((resolve, reject) => {
          client.greetingWaiter = { resolve, reject };
        }),
        timeoutMs,
        () => new QwdError('QWD_QMP_TIMEOUT', `QMP ${socketPath}: no greeting within ${timeoutMs} ms`),
        clock,
      );
      await client.execute('qmp_capabilities', undefined, { timeoutMs });
      client.state = 'ready';
      return client;
    } catch (err) {
      client.close();
      throw err;
    }
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<T> {
    if (this.state === 'closed') {
      return Promise.reject(new QwdError('QWD_QMP_ERROR', `QMP ${this.where}: closed, cannot run ${command}`));
    }
    const id = `qwd-${this.nextId++}`;
    const timeoutMs = opts.timeoutMs ?? 5000;
    return new Promise<T>((resolve, reject) => {
      const cancelTimer = this.clock.after(timeoutMs, () => {
        this.pending.delete(id);
        reject(new QwdError('QWD_QMP_TIMEOUT', `QMP ${this.where}: no answer to ${command} within ${timeoutMs} ms`));
      });
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, cancelTimer, command });
      const message: Record<string, unknown> = { execute: command, id };
      if (args) message.arguments = args;
      this.socket.write(JSON.stringify(message) + '\n');
    });
  }

  /** Sends quit and waits for the connection to close (QEMU exits right after answering). */
  async quit(timeoutMs = 5000): Promise<void> {
    const closed = new Promise<void>((resolve) => this.socket.once('close', () => resolve()));
    try {
      await this.execute('quit', undefined, { timeoutMs });
    } catch (err) {
      // QEMU may close the socket before its reply is read; a closed socket is what we want.
      if (this.state !== 'closed') throw err;
    }
    await withTimeout(
      closed, timeoutMs,
      () => new QwdError('QWD_QMP_TIMEOUT', `QMP ${this.where}: still open ${timeoutMs} ms after quit`),
      this.clock,
    );
  }

  close(): void {
    if (this.state === 'closed') return;
    this.socket.destroy();
    this.fail(new QwdError('QWD_QMP_ERROR', `QMP ${this.where}: closed by us`));
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (line) this.onMessage(line);
    }
    if (this.buffer.length > 16 * 1024 * 1024) {
      this.fail(new QwdError('QWD_QMP_ERROR', `QMP ${this.where}: oversized message`));
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line);
    } catch {
      this.fail(new QwdError('QWD_QMP_ERROR', `QMP ${this.where}: not JSON: ${line.slice(0, 200)}`));
      return;
    }
    if ('QMP' in msg) {
      if (this.state === 'connecting') {
        this.state = 'greeted';
        this.greetingWaiter?.resolve();
        this.greetingWaiter = null;
      }
      return;
    }
    if ('event' in msg) {
      this.emit('event', msg as unknown as QmpEvent);
      return;
    }
    const id = typeof msg.id === 'string' ? msg.id : undefined;
    const pending = id ? this.pending.get(id) : undefined;
    if (!pending || !id) return; // a reply to nobody (e.g. after its timeout): nothing waits for it
    this.pending.delete(id);
    pending.cancelTimer();
    if ('error' in msg) {
      const e = msg.error as { class?: string; desc?: string };
      pending.reject(
        new QwdError(
          'QWD_QMP_ERROR', `QMP ${pending.command}: ${e.class ?? 'Error'}: ${e.desc ?? 'unknown error'}`,
          { details: { qmpClass: e.class } },
        )
      );
    } else {
      pending.resolve(msg.return);
    }
  }

  private fail(err: Error): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.greetingWaiter?.reject(err);
    this.greetingWaiter = null;
    for (const p of this.pending.values()) {
      p.cancelTimer();
      p.reject(err);
    }
    this.pending.clear();
    this.socket.destroy();
    this.emit('close');
  }
}

export function withTimeout<T>(
  promise: Promise<T>, ms: number, makeError: () => Error, clock: Clock = systemClock,
): Promise<T> {
  let cancelTimer: CancelTimer = () => {};
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      cancelTimer = clock.after(ms, () => reject(makeError()));
    }),
  ]).finally(() => cancelTimer());
}
