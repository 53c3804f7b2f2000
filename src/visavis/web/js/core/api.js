// REST under /api (docs/openapi.json): JSON in, JSON out, errors as ApiError(code, message).

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  constructor(base = "") {
    this.base = base;
    this.token = null;
  }

  async request(method, path, body) {
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let response;
    try {
      response = await fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new ApiError(0, "network", "Cannot reach the server: check your connection and try again.");
    }
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      throw new ApiError(response.status, data?.code ?? "http_error", data?.message ?? `Server error ${response.status}`);
    }
    return data;
  }

  signup(handle, password, displayName) {
    return this.request("POST", "/api/signup", { handle, password, display_name: displayName || null });
  }
  login(handle, password, deviceName, deviceKind = "browser") {
    return this.request("POST", "/api/login", { handle, password, device_name: deviceName, device_kind: deviceKind });
  }
  me() {
    return this.request("GET", "/api/me");
  }
  devices() {
    return this.request("GET", "/api/devices");
  }
  revokeDevice(id) {
    return this.request("DELETE", `/api/devices/${encodeURIComponent(id)}`);
  }
  findUser(handle) {
    return this.request("GET", `/api/users/${encodeURIComponent(handle)}`);
  }
  history(limit = 50) {
    return this.request("GET", `/api/calls?limit=${limit}`);
  }
  refreshRoom(callId) {
    return this.request("POST", `/api/calls/${encodeURIComponent(callId)}/room`);
  }
  // -- call links (docs/protocol.md, "Call links and guests") --
  createLink(media = "video") {
    return this.request("POST", "/api/links", { media });
  }
  links() {
    return this.request("GET", "/api/links");
  }
  revokeLink(id) {
    return this.request("DELETE", `/api/links/${encodeURIComponent(id)}`);
  }
  /** No account: whose call a link opens, then wait in its lobby under a name. */
  linkInfo(token) {
    return this.request("GET", `/api/join/${encodeURIComponent(token)}`);
  }
  arrive(token, displayName) {
    return this.request("POST", `/api/join/${encodeURIComponent(token)}`, { display_name: displayName });
  }
  /** With a guest token (this.token): the lobby, and the room once admitted. */
  guestStatus() {
    return this.request("GET", "/api/guest");
  }
  guestLeave() {
    return this.request("DELETE", "/api/guest");
  }
  pushKey() {
    return this.request("GET", "/api/push/key");
  }
  setPush(subscription) {
    return this.request("PUT", "/api/devices/current/push", subscription);
  }
}
