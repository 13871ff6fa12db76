/**
 * Cold-path inspection of the sidecar's Python environment through pythonia (never used for
 * tensors): interpreter, torch/CUDA/GPUs, package versions, and which op modules fail to import,
 * each problem paired with a fix a person can run.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { PairuniError } from '../errors.js';
import { PACKAGE_ROOT, defaultVenv, resolvePython, sidecarSourceDir } from '../sidecar/python.js';

/** A problem the probe found, with a command or step that fixes it. */
export interface Problem {
  /** What is wrong. */
  what: string;
  /** A command or step that fixes it. */
  fix: string;
  /** The sidecar cannot start (or cannot run its core ops) until it is fixed. */
  fatal: boolean;
}

/** What {@link probe} found about the sidecar's Python environment. */
export interface ProbeReport {
  /** The interpreter probed. */
  python: string;
  /** Its version; absent when it could not be run. */
  pythonVersion?: string;
  /** The venv the SDK looks in. */
  venv: string;
  /** torch version, when importable. */
  torch?: string;
  /** torch sees a CUDA device. */
  cuda?: boolean;
  /** CUDA version torch was built with (null: a CPU build). */
  cudaVersion?: string | null;
  /** Visible GPUs, memory in GiB. */
  gpus: Array<{ index: number; name: string; memoryGiB: number }>;
  /** Version of each relevant package, null when missing. */
  packages: Record<string, string | null>;
  /** Version of the pairuni_sidecar package, when importable. */
  sidecar?: string;
  /** Op names the sidecar registers. */
  ops: string[];
  /** Registered plug-ins by kind (op, reward, adapter, backbone, tiny). */
  plugins: Record<string, string[]>;
  /** Plug-ins (by `kind:name`) and plug-in modules that failed to import, with the reason. */
  unavailable: Record<string, string>;
  /** What is wrong, each with a fix; empty for a healthy environment. */
  problems: Problem[];
}

const PACKAGES = [
  'torch',
  'numpy',
  'pyzmq',
  'msgpack',
  'pyarrow',
  'transformers',
  'safetensors',
  'pillow',
  'scikit-learn',
  'open_clip_torch',
  'torchvision',
];
const REQUIRED = new Set(['torch', 'numpy', 'pyzmq', 'msgpack', 'pyarrow']);

type PyProxy = any; // pythonia proxies are untyped by design

/** No venv yet: `npm install` creates it in a clone, but npm 11 skips the install scripts of dependencies
 * that the depending project's package.json does not list under allowScripts. */
function createVenvFix(): string {
  return `create the sidecar venv: node ${join(PACKAGE_ROOT, 'scripts', 'setup-python.mjs')} (or allow it once: \`npm install-scripts approve pairuni\`), or set PAIRUNI_PYTHON`;
}

/** Inspects the Python the sidecar would use. Never throws for a broken environment: it reports it. */
export async function probe(opts: { python?: string } = {}): Promise<ProbeReport> {
  const python = resolvePython(opts.python);
  // Neither chosen nor created: resolvePython fell back to whatever python3 is on PATH.
  const noVenv = !opts.python && !process.env.PAIRUNI_PYTHON && !existsSync(defaultVenv());
  const report: ProbeReport = {
    python,
    venv: defaultVenv(),
    gpus: [],
    packages: {},
    ops: [],
    plugins: {},
    unavailable: {},
    problems: [],
  };
  const check = spawnSync(python, ['-c', 'import sys; print(sys.version.split()[0])'], { encoding: 'utf8' });
  if (check.error || check.status !== 0) {
    report.problems.push({
      what: `cannot run the sidecar's Python (${python}): ${check.error?.message ?? check.stderr.trim()}`,
      fix: existsSync(defaultVenv()) ? `recreate the venv: rm -rf ${defaultVenv()} && npm install` : createVenvFix(),
      fatal: true,
    });
    return report;
  }
  process.env.PYTHON_BIN = python;
  let mod: { python: ((m: string) => Promise<PyProxy>) & { exit(): void } };
  try {
    mod = (await import('pythonia')) as unknown as typeof mod;
  } catch (e) {
    throw new PairuniError('probe_failed', `could not load pythonia: ${(e as Error).message}`);
  }
  const { python: py } = mod;
  try {
    const sys = await py('sys');
    report.pythonVersion = String(await sys.version).split(' ')[0];
    await (await sys.path).insert(0, sidecarSourceDir());
    const md = await py('importlib.metadata');
    for (const p of PACKAGES) {
      try {
        report.packages[p] = String(await md.version(p));
      } catch {
        report.packages[p] = null;
        if (REQUIRED.has(p)) {
          report.problems.push({
            what: `required package '${p}' is missing`,
            fix: noVenv
              ? createVenvFix()
              : `${python} -m pip install -r ${join(sidecarSourceDir(), 'requirements.lock')}`,
            fatal: true,
          });
        }
      }
    }
    if (report.packages.torch) {
      const torch = await py('torch');
      const builtins = await py('builtins');
      report.torch = String(await builtins.str(await torch.__version__));
      report.cuda = Boolean(await torch.cuda.is_available());
      report.cudaVersion = (await torch.version.cuda) ?? null;
      const n = report.cuda ? Number(await torch.cuda.device_count()) : 0;
      for (let i = 0; i < n; i++) {
        const p = await torch.cuda.get_device_properties(i);
        report.gpus.push({
          index: i,
          name: String(await p.name),
          memoryGiB: Math.round(Number(await p.total_memory) / 2 ** 30),
        });
      }
      if (!report.cuda) {
        report.problems.push({
          what: 'torch has no CUDA: rollouts and updates will run on CPU (fine for the demo and tests, slow for real models)',
          fix: 'on a GPU host, install a CUDA build of torch into the venv (pip install torch==<version> --index-url <your CUDA wheel index>)',
          fatal: false,
        });
      }
    }
    if (!report.packages.transformers) {
      report.problems.push({
        what: 'transformers is missing: the Janus adapter is unavailable',
        fix: `${python} -m pip install 'transformers>=5.18.0'`,
        fatal: false,
      });
    } else if (/^5\.17\./.test(report.packages.transformers)) {
      report.problems.push({
        what: 'transformers 5.17 has a broken Janus image generate',
        fix: `${python} -m pip install 'transformers>=5.18.0'`,
        fatal: false,
      });
    }
    if (!report.packages.open_clip_torch) {
      report.problems.push({
        what: 'open_clip_torch is missing: the HPSv2 reward is unavailable',
        fix: `${python} -m pip install 'pairuni-sidecar[hps]' (needs a torchvision build matching your torch)`,
        fatal: false,
      });
    }
    try {
      const pkg = await py('pairuni_sidecar');
      report.sidecar = String(await pkg.__version__);
      const reg = await py('pairuni_sidecar.registry');
      await reg.load_plugins();
      // Imports every lazy plug-in entry (adapters, rewards, backbones, ...) the way the `info` op does.
      const errs = (await (await reg.load_all()).valueOf()) as Record<string, string>;
      for (const kind of (await (await reg.KINDS).valueOf()) as string[]) {
        report.plugins[kind] = (await (await reg.names(kind)).valueOf()) as string[];
      }
      report.ops = report.plugins.op ?? [];
      report.unavailable = errs;
      for (const [m, why] of Object.entries(errs)) {
        report.problems.push({
          what: `plug-in ${m} failed to import: ${why}`,
          fix: 'install the missing package named above into the venv (or its pairuni-sidecar extra)',
          fatal: false,
        });
      }
    } catch (e) {
      report.problems.push({
        what: `pairuni_sidecar does not import: ${(e as Error).message.split('\n')[0]}`,
        fix: `${python} -m pip install -e python_sidecar`,
        fatal: true,
      });
    }
  } finally {
    py.exit();
  }
  return report;
}
