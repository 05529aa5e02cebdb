// Resumable uploads by the tus 1.0 protocol (the service's files/tus), as the Python client
// does them: the file goes in chunks, each a PATCH at the offset the server has. The upload's
// URL is kept in localStorage under the file's name, size, date and tag, so that a page
// reloaded after a cut asks the server how far it got (HEAD) and sends only the rest; a failed
// chunk is tried again from the server's offset, up to `tries` failures in a row.
const TUS = { "Tus-Resumable": "1.0.0" };
const FILE_ID = "X-Caesar-File-Id";
const OFFSET_STREAM = "application/offset+octet-stream";
// Answers after which the upload is gone on the server: forget it, a new try starts again.
const FINAL = new Set([400, 403, 404, 410, 413, 415]);

/** The Upload-Metadata header: `key base64(UTF-8 value)` pairs, comma separated. */
export function encodeMetadata(values) {
  const b64 = (s) => btoa(Array.from(new TextEncoder().encode(s), (b) => String.fromCharCode(b)).join(""));
  return Object.entries(values).filter(([, v]) => v != null && v !== "").map(([k, v]) => `${k} ${b64(String(v))}`).join(",");
}

/** One request by XHR (upload progress); resolves with status, header(name) and text. */
function request(method, url, headers, body = null, onSent = null) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    if (onSent) xhr.upload.onprogress = (e) => onSent(e.loaded);
    xhr.onload = () => resolve({ status: xhr.status, header: (n) => xhr.getResponseHeader(n), text: xhr.responseText });
    xhr.onerror = () => reject(new Error(`network error on ${method}`));
    xhr.onabort = xhr.onerror;
    xhr.send(body);
  });
}

function refusal(r) {
  let msg = `HTTP ${r.status}`;
  try { msg = JSON.parse(r.text).status || msg; } catch { /* not JSON */ }
  const err = new Error(msg);
  err.status = r.status;
  return err;
}

/**
 * Send `file` to the tus endpoint and resolve with the registered file's id.
 * opts: endpoint (absolute URL), headers() (authorisation), tag, chunkSize (bytes per PATCH),
 * tries (failures in a row), onProgress(done, total), sleep(failures) (a promise).
 */
export async function upload(file, opts) {
  const { endpoint, headers = () => ({}), tag = "", chunkSize = 8 * 1024 * 1024, tries = 4 } = opts;
  const onProgress = opts.onProgress || (() => {});
  const sleep = opts.sleep || ((n) => new Promise((r) => setTimeout(r, 200 * n)));
  const hdr = (extra = {}) => ({ ...TUS, ...headers(), ...extra });
  if (file.size === 0) throw new Error("empty file");
  const key = `caesar-rest.tus|${endpoint}|${file.name}|${file.size}|${file.lastModified}|${tag}`;
  const offsetOf = async (url) => {
    const r = await request("HEAD", url, hdr());
    if (r.status !== 200) throw refusal(r);
    return { offset: Number(r.header("Upload-Offset")), fileId: r.header(FILE_ID) };
  };

  let url = localStorage.getItem(key), offset = 0, fileId = null;
  if (url) {
    try { ({ offset, fileId } = await offsetOf(url)); } catch { url = null; localStorage.removeItem(key); }
  }
  if (!url) {
    const r = await request("POST", endpoint, hdr({ "Upload-Length": String(file.size), "Upload-Metadata": encodeMetadata({ filename: file.name, tag }) }));
    if (r.status !== 201) throw refusal(r);
    url = new URL(r.header("Location"), endpoint).href;
    localStorage.setItem(key, url);
  }
  onProgress(offset, file.size);
  let failures = 0;
  while (offset < file.size) {
    const start = offset;
    let r = null;
    try {
      r = await request("PATCH", url, hdr({ "Upload-Offset": String(start), "Content-Type": OFFSET_STREAM }),
        file.slice(start, start + chunkSize), (n) => onProgress(start + n, file.size));
    } catch { /* cut: asked again below */ }
    if (r && r.status === 204) {
      offset = Number(r.header("Upload-Offset"));
      fileId = r.header(FILE_ID) || fileId;
      failures = 0;
      onProgress(offset, file.size);
      continue;
    }
    if (r && r.status !== 409 && r.status !== 423 && r.status < 500) {
      if (FINAL.has(r.status)) localStorage.removeItem(key);
      throw refusal(r);
    }
    if (++failures >= tries) throw new Error(`upload failed ${failures} times in a row`);
    await sleep(failures);
    try { ({ offset } = await offsetOf(url)); } catch { /* the next PATCH finds out */ }
  }
  if (!fileId) ({ fileId } = await offsetOf(url)); // completed before this page: HEAD names it
  localStorage.removeItem(key);
  return fileId;
}
