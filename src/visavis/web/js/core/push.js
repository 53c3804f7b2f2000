// The installable app's side of Web Push: register the service worker (sw.js), and
// subscribe this device so signaling can ring it with no page open.

export async function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) return null;
  try {
    return await navigator.serviceWorker.register("/sw.js", { scope: "/" });
  } catch (err) {
    console.warn("visavis: no service worker", err);
    return null;
  }
}

function urlBase64ToBytes(value) {
  const padded = value.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (value.length % 4)) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

/** Ask for notifications and subscribe this device (PUT /api/devices/current/push). */
export async function enablePush(api) {
  if (!("serviceWorker" in navigator) || !("PushManager" in window)) {
    throw new Error("This browser cannot receive calls with the app closed.");
  }
  const permission = await Notification.requestPermission();
  if (permission !== "granted") throw new Error("Allow notifications to be rung with the app closed.");
  const { public_key: key } = await api.pushKey();
  if (!key) throw new Error("This server has no push key configured.");
  const registration = await navigator.serviceWorker.ready;
  let subscription;
  try {
    subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: urlBase64ToBytes(key) });
  } catch (err) {
    throw new Error(`The browser's push service is unreachable: ${err.message}`);
  }
  const json = subscription.toJSON();
  await api.setPush({ endpoint: json.endpoint, keys: json.keys });
}

/** A ring was handled in this page: close its notification, if one is shown. */
export function ringHandled(callId) {
  navigator.serviceWorker?.controller?.postMessage({ type: "ring.handled", call_id: callId });
}
