// Login in the browser: the OIDC authorization-code flow with PKCE (RFC 7636) against the
// provider the service trusts (GET ../app/config). Tokens are kept in sessionStorage (this tab
// only), sent only in the Authorization header, never put in a URL; the code is exchanged at
// the token endpoint and the query string is removed from the address bar at once.
const KEY = "caesar-rest.auth";
const FLOW = "caesar-rest.pkce";
let cfg = { auth: false };
let meta = null;

const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const random = (n = 32) => b64url(crypto.getRandomValues(new Uint8Array(n)));

/** The PKCE S256 challenge of a verifier. */
export async function challenge(verifier) {
  return b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
}

function saved() {
  try {
    const t = JSON.parse(sessionStorage.getItem(KEY) || "null");
    return t && t.expires_at > Date.now() / 1000 + 5 ? t : null;
  } catch { return null; }
}

/** Whether the service wants a token. */
export const enabled = () => cfg.auth === true;

/** Headers that carry the access token (none with authentication off or logged out). */
export function headers() {
  const t = cfg.auth ? saved() : null;
  return t ? { Authorization: "Bearer " + t.access_token } : {};
}

async function discovery() {
  if (!meta) {
    const r = await fetch(cfg.issuer.replace(/\/$/, "") + "/.well-known/openid-configuration");
    if (!r.ok) throw new Error("the identity provider did not answer");
    meta = await r.json();
  }
  return meta;
}
const redirectUri = () => location.origin + location.pathname;

export async function login() {
  const m = await discovery();
  const verifier = random(48), st = random(16);
  sessionStorage.setItem(FLOW, JSON.stringify({ verifier, state: st, hash: location.hash }));
  const q = new URLSearchParams({
    response_type: "code", client_id: cfg.client_id, redirect_uri: redirectUri(), scope: cfg.scope,
    state: st, code_challenge: await challenge(verifier), code_challenge_method: "S256",
  });
  if (cfg.resource) q.set("resource", cfg.resource);
  location.assign(m.authorization_endpoint + "?" + q);
}

async function exchange(params) {
  const flow = JSON.parse(sessionStorage.getItem(FLOW) || "null");
  sessionStorage.removeItem(FLOW);
  // The code and state leave the address bar (and the history) before anything else.
  history.replaceState(null, "", redirectUri() + (flow?.hash || ""));
  if (params.get("error")) throw new Error(`login refused: ${params.get("error_description") || params.get("error")}`);
  if (!flow || params.get("state") !== flow.state) throw new Error("login answer does not match the request (state)");
  const m = await discovery();
  const body = new URLSearchParams({
    grant_type: "authorization_code", code: params.get("code"), redirect_uri: redirectUri(),
    client_id: cfg.client_id, code_verifier: flow.verifier,
  });
  if (cfg.resource) body.set("resource", cfg.resource);
  const r = await fetch(m.token_endpoint, { method: "POST", body, headers: { "Content-Type": "application/x-www-form-urlencoded" } });
  const tok = await r.json();
  if (!r.ok) throw new Error(`token exchange failed: ${tok.error_description || tok.error || r.status}`);
  sessionStorage.setItem(KEY, JSON.stringify({
    access_token: tok.access_token, id_token: tok.id_token || null,
    expires_at: Date.now() / 1000 + (tok.expires_in || 300),
  }));
}

export async function logout() {
  const t = saved();
  sessionStorage.removeItem(KEY);
  const m = await discovery().catch(() => null);
  if (m && m.end_session_endpoint && t && t.id_token) {
    const q = new URLSearchParams({ id_token_hint: t.id_token, post_logout_redirect_uri: redirectUri(), client_id: cfg.client_id });
    location.assign(m.end_session_endpoint + "?" + q);
  } else location.assign(redirectUri());
}

/** Read the configuration, finish a login in progress; false when a login is needed first. */
export async function start({ $ }) {
  try { cfg = await (await fetch("config")).json(); } catch { cfg = { auth: false }; }
  if (!cfg.auth) return true;
  $("#logout").onclick = () => logout();
  $("#login").onclick = () => login().catch((e) => { $("#login-msg").textContent = e.message; });
  const params = new URLSearchParams(location.search);
  if (params.has("code") || params.has("error")) {
    try { await exchange(params); } catch (e) { $("#login-msg").textContent = e.message; }
  }
  const ok = saved() !== null;
  $("#login").hidden = ok; $("#logout").hidden = !ok;
  if (!ok) {
    for (const s of document.querySelectorAll(".screen")) s.hidden = s.id !== "login-screen";
    if (!cfg.client_id) $("#login-msg").textContent = "This service takes bearer tokens but has no web client configured (CAESAR_REST_OIDC_WEB_CLIENT_ID).";
  }
  return ok;
}
