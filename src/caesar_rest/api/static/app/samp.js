// A small SAMP Web Profile client (IVOA SAMP 1.3, section 5): XML-RPC over HTTP POST to the
// hub at http://localhost:21012/, as TOPCAT, DS9 and Aladin Desktop's hubs offer it.
// register -> declareMetadata -> notifyAll(table.load.votable | image.load.fits) -> unregister.
export const HUB = "http://localhost:21012/";
const PREFIX = "samp.webhub.";

const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** One value as XML-RPC (SAMP uses only strings, lists and maps). */
export function encodeValue(v) {
  if (Array.isArray(v)) return `<value><array><data>${v.map(encodeValue).join("")}</data></array></value>`;
  if (v !== null && typeof v === "object") {
    const members = Object.entries(v).map(([k, x]) => `<member><name>${esc(k)}</name>${encodeValue(x)}</member>`);
    return `<value><struct>${members.join("")}</struct></value>`;
  }
  return `<value><string>${esc(v)}</string></value>`;
}

/** The body of an XML-RPC call to ``samp.webhub.<method>``. */
export function encodeCall(method, params) {
  return `<?xml version="1.0"?><methodCall><methodName>${PREFIX}${method}</methodName><params>` +
    params.map((p) => `<param>${encodeValue(p)}</param>`).join("") + "</params></methodCall>";
}

function decodeNode(value) {
  const node = [...value.children][0];
  if (!node) return value.textContent; // a bare <value>text</value> is a string
  switch (node.tagName) {
    case "array": return [...node.querySelector("data").children].map(decodeNode);
    case "struct": {
      const out = {};
      for (const m of node.children) out[m.querySelector("name").textContent] = decodeNode(m.querySelector("value"));
      return out;
    }
    case "i4": case "int": case "double": return Number(node.textContent);
    case "boolean": return node.textContent.trim() === "1";
    default: return node.textContent;
  }
}

/** The result of an XML-RPC response; throws the fault string of a fault. */
export function decodeResponse(xml) {
  const doc = new DOMParser().parseFromString(xml, "text/xml");
  const fault = doc.querySelector("methodResponse > fault > value");
  if (fault) { const f = decodeNode(fault); throw new Error(`SAMP hub fault: ${f.faultString || JSON.stringify(f)}`); }
  const value = doc.querySelector("methodResponse > params > param > value");
  if (!value) throw new Error("not an XML-RPC response");
  return decodeNode(value);
}

export async function call(method, params, hub = HUB) {
  let r;
  try {
    r = await fetch(hub, { method: "POST", headers: { "Content-Type": "text/xml" }, body: encodeCall(method, params) });
  } catch {
    throw new Error("no SAMP hub answers at " + hub + " (start TOPCAT, DS9 or Aladin Desktop)");
  }
  if (!r.ok) throw new Error(`SAMP hub answered HTTP ${r.status}`);
  return decodeResponse(await r.text());
}

/** The SAMP message that loads ``url`` (a VOTable or a FITS image) in the receiving tools. */
export function loadMessage(kind, url, name) {
  const mtype = kind === "image" ? "image.load.fits" : "table.load.votable";
  const idKey = kind === "image" ? "image-id" : "table-id";
  return { "samp.mtype": mtype, "samp.params": { url, name, [idKey]: url } };
}

/** Register with the hub, send ``message`` to every subscribed client, unregister. */
export async function broadcast(message, hub = HUB) {
  const reg = await call("register", [{ "samp.name": "caesar-rest" }], hub);
  const key = reg["samp.private-key"];
  try {
    await call("declareMetadata", [key, { "samp.name": "caesar-rest", "samp.description.text": "caesar-rest web application" }], hub);
    return await call("notifyAll", [key, message], hub);
  } finally {
    await call("unregister", [key], hub).catch(() => {});
  }
}
