/**
 * CURVE for ranks on other hosts: the controller's two ROUTERs are CURVE servers, and a ZAP handler
 * (ZeroMQ RFC 27) admits only allow-listed client keys. zeromq.js has no authenticator class: the
 * handler is a socket bound to `inproc://zeromq.zap.01` in the controller's own context, bound
 * before the ROUTERs. Plaintext clients fail the handshake (mechanism mismatch) and never reach it.
 *
 * Key files (`pairuni keys NAME`): `NAME.key` = {"public", "secret"} (Z85, mode 0600), `NAME.pub` =
 * the public key alone, to hand to the other side. ipc:// endpoints stay plain (a 0700 directory).
 */
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import * as zmq from 'zeromq';
import { ConfigError } from '../errors.js';
import { type Logger, stderrLogger } from '../util/log.js';

/** A CURVE key pair, as `generateKeyPair` makes it and a `.key` file (`pairuni keys NAME`) holds it. */
export interface KeyPair {
  /** 40 Z85 characters; safe to share: the other side's allow-list (or its server key) names it. */
  publicKey: string;
  /** 40 Z85 characters; never leaves this host (its `.key` file is mode 0600). */
  secretKey: string;
}

/**
 * CURVE encryption and a client allow-list for a controller whose ROUTERs listen on tcp://, so that
 * only ranks holding an allowed key can connect from other hosts.
 */
export interface CurveOptions {
  /** The controller's key pair, or the path of its `.key` file. */
  key: KeyPair | string;
  /** Public keys (Z85, or paths of `.pub` files) of the ranks that may connect. */
  allow: string[];
}

/** What the ZAP handler decided for one connection attempt. */
export interface AuthEvent {
  /** True when the client spoke ZAP 1.0 over CURVE with a key on the allow-list; false: the connection was refused. */
  allowed: boolean;
  /** Z85 public key of the client (CURVE), or '' for other mechanisms. */
  key: string;
  /** The client's IP address as ZeroMQ reports it ('' when it gives none): where a refused attempt came from. */
  address: string;
  /** The security mechanism the client used, as ZAP names it (`CURVE`); anything but CURVE is refused. */
  mechanism: string;
}

const Z85 = /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/;

export function generateKeyPair(): KeyPair {
  return zmq.curveKeyPair();
}

/** Writes `<base>.key` (0600) and `<base>.pub`; refuses to overwrite an existing key. */
export function writeKeyPair(base: string, kp: KeyPair = generateKeyPair()): { keyFile: string; pubFile: string } {
  const keyFile = `${base}.key`;
  const pubFile = `${base}.pub`;
  for (const f of [keyFile, pubFile])
    if (existsSync(f)) throw new ConfigError(`${f} exists: refusing to overwrite a key (remove it first)`);
  writeFileSync(keyFile, `${JSON.stringify({ public: kp.publicKey, secret: kp.secretKey })}\n`, { mode: 0o600 });
  chmodSync(keyFile, 0o600);
  writeFileSync(pubFile, `${kp.publicKey}\n`);
  return { keyFile, pubFile };
}

export function readKeyPair(src: KeyPair | string): KeyPair {
  if (typeof src !== 'string') return checkPair(src, 'key');
  let j: { public?: unknown; secret?: unknown };
  try {
    j = JSON.parse(readFileSync(src, 'utf8')) as typeof j;
  } catch (e) {
    throw new ConfigError(`cannot read the key file ${src}: ${(e as Error).message}`, { cause: e });
  }
  return checkPair({ publicKey: String(j.public ?? ''), secretKey: String(j.secret ?? '') }, src);
}

function checkPair(kp: KeyPair, what: string): KeyPair {
  if (!Z85.test(kp.publicKey) || !Z85.test(kp.secretKey))
    throw new ConfigError(`${what}: not a CURVE key pair (two 40-character Z85 keys)`);
  return kp;
}

/** A public key given inline (40 Z85 characters) or as the path of a `.pub` file. */
export function readPublicKey(src: string): string {
  if (Z85.test(src)) return src;
  let k: string;
  try {
    k = readFileSync(src, 'utf8').trim();
  } catch (e) {
    throw new ConfigError(`allow-list entry ${src} is neither a Z85 public key nor a readable .pub file`, { cause: e });
  }
  if (!Z85.test(k)) throw new ConfigError(`${src} does not hold a Z85 public key`);
  return k;
}

/** The ZAP handler of one context: answers every handshake from the allow-list. */
export class ZapHandler {
  private readonly sock: zmq.Router;
  private readonly allow: Set<string>;
  private closed = false;

  constructor(
    context: zmq.Context,
    allow: Iterable<string>,
    private readonly onAuth: (ev: AuthEvent) => void,
    private readonly log: Logger = stderrLogger,
  ) {
    this.sock = new zmq.Router({ context, linger: 0 });
    this.allow = new Set(allow);
  }

  async start(): Promise<void> {
    await this.sock.bind('inproc://zeromq.zap.01');
    void this.loop();
  }

  private async loop(): Promise<void> {
    try {
      for await (const frames of this.sock) {
        // [routing id, '', version, request id, domain, address, identity, mechanism, credentials...]
        const [rid, delim, version, reqId, , address, , mechanism, cred] = frames;
        const mech = mechanism?.toString() ?? '';
        const key = mech === 'CURVE' && cred?.length === 32 ? z85(cred) : '';
        const allowed = version?.toString() === '1.0' && mech === 'CURVE' && this.allow.has(key);
        this.onAuth({ allowed, key, address: address?.toString() ?? '', mechanism: mech });
        await this.sock.send([
          rid,
          delim,
          '1.0',
          reqId,
          allowed ? '200' : '400',
          allowed ? 'OK' : 'key not allowed',
          allowed ? key : '',
          '',
        ]);
      }
    } catch (e) {
      if (!this.closed) this.log.error('[pairuni] ZAP handler stopped:', e);
    }
  }

  close(): void {
    this.closed = true;
    this.sock.close();
  }
}

// Z85 (ZeroMQ RFC 32) for the 32-byte CURVE keys the ZAP request carries.
const Z85_CHARS = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';
export function z85(buf: Uint8Array): string {
  let out = '';
  for (let i = 0; i < buf.length; i += 4) {
    let v = ((buf[i] << 24) >>> 0) + (buf[i + 1] << 16) + (buf[i + 2] << 8) + buf[i + 3];
    const chunk: string[] = [];
    for (let j = 0; j < 5; j++) {
      chunk.unshift(Z85_CHARS[v % 85]);
      v = Math.floor(v / 85);
    }
    out += chunk.join('');
  }
  return out;
}
