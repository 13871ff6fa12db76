/**
 * A raw `sc.call` refused by the sidecar: the message names the op once. The sidecar's contract
 * check already leads with it (`train.load: missing field(s) …`) and an unknown op names itself.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SidecarError } from '../../src/errors.js';
import { Sidecar } from '../../src/sidecar/index.js';
import { withOp } from '../../src/sidecar/controller.js';

let sc: Sidecar;
beforeAll(async () => {
  sc = await Sidecar.spawn({ threads: 1 });
}, 120_000);
afterAll(async () => {
  await sc?.close();
});

const refusal = (op: string, args: Record<string, unknown> = {}) =>
  sc.call(op, args).then(
    () => undefined,
    (e: unknown) => e as SidecarError,
  );

describe('a raw sc.call error names its op once', () => {
  it('bad arguments of a catalogued op', async () => {
    const e = await refusal('train.load', {});
    expect(e).toBeInstanceOf(SidecarError);
    expect(e!.message).toMatch(/^train\.load: missing field\(s\) /);
    expect(e!.message.split('train.load').length - 1).toBe(1);
  });

  it('an unknown op', async () => {
    const e = await refusal('no.such_op');
    expect(e!.message).toBe("unknown op 'no.such_op'");
  });

  it("an op's own failure is still led by the op", () => {
    expect(withOp('train.update', 'CUDA out of memory')).toBe('train.update: CUDA out of memory');
    expect(withOp('info', "unknown op 'info2'")).toBe("info: unknown op 'info2'");
  });
});
