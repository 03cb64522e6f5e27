// The gateway's API, typed as the app uses it. Every call carries the API key kept in
// sessionStorage (never localStorage: it goes when the tab closes).

export type Role = "viewer" | "operator" | "approver" | "admin";

export interface WhoAmI {
  key_id: string;
  name: string;
  role: Role;
}

export interface GatewayConfig {
  basemap_url: string | null;
}

export interface ModelSummary {
  id: string;
  title: string;
  description: string;
  tasks: string[];
  framework: string;
  bbox: number[] | null;
  versions: string[];
  aliases: Record<string, string>;
}

export interface VersionDetail {
  version: string;
  run_id?: string;
  mlflow_run_url?: string | null;
  aliases?: string[];
  metrics?: Record<string, number>;
  lineage?: Record<string, string>;
  item?: { id?: string; links?: { rel: string; href: string }[] } | null;
  item_url?: string | null;
  [key: string]: unknown;
}

export interface ModelClass {
  value: number;
  name: string;
  description?: string;
  color: string | null;
}

export interface ModelBand {
  name: string;
  common_name?: string | null;
  description?: string;
}

export interface ModelDetail extends ModelSummary {
  item: Record<string, unknown> & { properties?: Record<string, unknown> };
  version_details: VersionDetail[];
  classes?: ModelClass[];
  bands?: ModelBand[];
  /** The imagery's bands the model reads: its input bands but derived ones, then those they read. */
  reads?: string[];
  item_url?: string | null;
  production?: string | null;
  previous?: string | null;
  geometry?: GeoJSON.Geometry | null;
}

export interface Imagery {
  id: string;
  title?: string;
  href?: string;
  path?: string;
  bbox?: number[] | null;
  bands?: string[];
  [key: string]: unknown;
}

export interface TaskInfo {
  name: string;
  phase: string;
  progress: string;
  message: string;
  approval?: { approver: string; reason: string; override?: boolean; decision?: "approved" | "refused" } | null;
}

export interface BlockProgress {
  done: number;
  total: number;
  unit: string;
  started: string | null;
  elapsed_s: number | null;
  eta_s: number | null;
}

export interface BatchPlan {
  blocks: number;
  groups: number;
  block_size: number;
  notes: string[];
  bbox: number[] | null;
}

export interface RunInfo {
  run_id: string;
  pipeline: string;
  phase: string;
  started: string | null;
  finished: string | null;
  message: string;
  submitted_by: string;
  parameters: Record<string, string>;
  progress: string;
  tasks: TaskInfo[];
  outputs: Record<string, Record<string, string>>;
  waiting_gate: string | null;
  blocks?: BlockProgress | null;
  /** W,S,E,N (WGS84) of a batch run's area of interest when the gateway gave it. */
  aoi_bbox?: [number, number, number, number] | null;
  [key: string]: unknown;
}

export interface BatchRequest {
  model: string;
  version?: string;
  alias?: string;
  imagery: string;
  aoi?: GeoJSON.GeoJSON;
  parameters?: Record<string, string>;
}

export interface Lineage {
  run_id?: string;
  model?: string;
  model_version?: string;
  mlflow_run_id?: string;
  mlflow_run_url?: string | null;
  dataset_hash?: string | null;
  code_commit?: string | null;
  code_sha256?: string | null;
  model_item_url?: string;
  predictions_item_url?: string | null;
}

export interface MetricRow {
  name: string;
  candidate: number | null;
  production: number | null;
}

export interface PromotionReport {
  run_id: string;
  model: string;
  candidate: string;
  production: string | null;
  class_names: string[];
  primary_metric: string;
  tolerance: number;
  delta: number | null;
  verdict: "passed" | "refused";
  summary: string;
  metrics: MetricRow[];
  waiting_gate: string | null;
  picture: string;
}

export interface AuditRecord {
  at: string;
  actor: string;
  role: string;
  method: string;
  action: string;
  target: string;
  status: number;
  detail: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const KEY = "geomlops.apiKey";

export function apiKey(): string | null {
  return sessionStorage.getItem(KEY);
}

export function setApiKey(key: string | null): void {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

export function authHeaders(): Record<string, string> {
  const key = apiKey();
  return key ? { "X-API-Key": key } : {};
}

function detail(body: unknown): string {
  if (body && typeof body === "object" && "detail" in body) {
    const d = (body as { detail: unknown }).detail;
    if (typeof d === "string") return d;
    if (Array.isArray(d))
      return d
        .map((e: { loc?: unknown[]; msg?: string }) => `${(e.loc ?? []).join(".")}: ${e.msg ?? ""}`)
        .join("; ");
  }
  return JSON.stringify(body);
}

export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json", ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await answer.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // plain text (logs)
  }
  if (!answer.ok) throw new ApiError(answer.status, `${answer.status}: ${detail(parsed)}`);
  return parsed as T;
}

export const api = {
  config: () => call<GatewayConfig>("GET", "/config"),
  whoami: () => call<WhoAmI>("GET", "/whoami"),
  models: (params: Record<string, string>) =>
    call<ModelSummary[]>("GET", `/models?${new URLSearchParams(params).toString()}`),
  model: (id: string) => call<ModelDetail>("GET", `/models/${encodeURIComponent(id)}`),
  imagery: () => call<Imagery[]>("GET", "/imagery"),
  plan: (body: BatchRequest) => call<BatchPlan>("POST", "/runs/batch-inference/plan", body),
  start: (body: BatchRequest) => call<RunInfo>("POST", "/runs/batch-inference", body),
  runs: () => call<RunInfo[]>("GET", "/runs"),
  run: (id: string) => call<RunInfo>("GET", `/runs/${encodeURIComponent(id)}`),
  logs: (id: string) => call<string>("GET", `/runs/${encodeURIComponent(id)}/logs`),
  stop: (id: string) => call<RunInfo>("POST", `/runs/${encodeURIComponent(id)}/stop`),
  predictions: (id: string) =>
    call<{ assets: Record<string, string>; features: number | null; item_href: string; item: unknown }>(
      "GET",
      `/runs/${encodeURIComponent(id)}/predictions`,
    ),
  lineage: (id: string) => call<Lineage>("GET", `/runs/${encodeURIComponent(id)}/lineage`),
  report: (id: string) => call<PromotionReport>("GET", `/runs/${encodeURIComponent(id)}/report`),
  approve: (id: string, reason: string, override: boolean) =>
    call<RunInfo>("POST", `/runs/${encodeURIComponent(id)}/approve`, { reason, override }),
  refuse: (id: string, reason: string) =>
    call<RunInfo>("POST", `/runs/${encodeURIComponent(id)}/refuse`, { reason }),
  audit: () => call<AuditRecord[]>("GET", "/audit"),
  rollback: (model: string, reason: string) =>
    call<{ model: string; production: string; demoted: string; summary: string }>(
      "POST",
      `/models/${encodeURIComponent(model)}/rollback`,
      { reason },
    ),
};

/** Fetch a binary resource with the key and hand it back as an object URL (for <img>, downloads). */
export async function blobUrl(path: string): Promise<string> {
  const answer = await fetch(`/api/v1${path}`, { headers: authHeaders() });
  if (!answer.ok) {
    const text = await answer.text();
    let said: string = text;
    try {
      said = detail(JSON.parse(text));
    } catch {
      // not JSON: as it came
    }
    throw new ApiError(answer.status, `${answer.status}: ${said}`);
  }
  return URL.createObjectURL(await answer.blob());
}
