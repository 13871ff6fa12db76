/** An image backbone for pairing features (`features.*` ops); the sidecar's registry resolves `kind`. */
import { z } from 'zod';
import { userPath } from './wire.js';

/** The image backbone that embeds images for pairing (zod schema; `backbone` of the pairing config and `features.backbone`). */
export const BackboneSpec = z
  .object({
    /** A backbone registered in the sidecar: resnet50 | torchvision | timm | hf | pixels, or a plug-in's. */
    kind: z.string().min(1),
    /** Model name for torchvision/timm (e.g. 'resnet50', 'vit_pe_core_base_patch16_224'). */
    name: z.string().optional(),
    /** Local weights file (resnet50/torchvision/timm) or model directory (hf). Required except for pixels. */
    weights: userPath.optional(),
    /** Side length of the `pixels` embedder (features = 3·size² values). */
    size: z.number().int().min(1).max(512).default(16),
    /** auto | cpu | cuda | cuda:N */
    device: z.string().default('auto'),
  })
  .strict();
/** What callers write (size and device may be left out: their declared defaults apply). */
export type BackboneSpec = z.input<typeof BackboneSpec>;
