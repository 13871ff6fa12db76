/**
 * TypeDoc plug-in: the `Sidecar`'s op methods (`sc.train.load`, `sc.echo`, ...) are mapped from the op
 * catalogue's types, so they carry no JSDoc of their own. Each gets the catalogue's `doc` string
 * (the one docs/ops.md is generated from), so the reference documents them without a second copy.
 */
import { Comment, Converter, ReflectionKind } from 'typedoc';
import { tsImport } from 'tsx/esm/api';

const camel = (s) => s.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());

/** @param {import('typedoc').Application} app */
export async function load(app) {
  const { OPS } = await tsImport('../src/contract/ops.ts', import.meta.url);
  // The client's method path (`train.prepareReward`) → the op's name (`train.prepare_reward`).
  const byMethod = new Map(Object.keys(OPS).map((op) => [camel(op), op]));
  app.converter.on(Converter.EVENT_RESOLVE_END, (context) => {
    const sidecar = context.project.getReflectionsByKind(ReflectionKind.Class).find((r) => r.name === 'Sidecar');
    if (!sidecar) return;
    const describe = (refl, path) => {
      const op = byMethod.get(path);
      if (refl.hasComment() || !op) return;
      const scope = OPS[op].scope === 'world' ? ' Collective: sent to every rank.' : '';
      // The link is relative to the rendered page (docs/api/pairuni.md); check-links.mjs catches a move.
      refl.comment = new Comment([{ kind: 'text', text: `Op \`${op}\`: ${OPS[op].doc}.${scope} Arguments and reply: [docs/ops.md](../ops.md#${op.replace(/\./g, '')}).` }]);
    };
    for (const member of sidecar.children ?? []) {
      describe(member, member.name);
      const inner = member.type?.type === 'reflection' ? member.type.declaration.children : undefined;
      for (const m of inner ?? []) describe(m, `${member.name}.${m.name}`);
    }
  });
}
