// The service worker of the installable app: rings when no page is open.
//
// Signaling pushes (Web Push, docs/signaling.md) to a device with no live connection:
// `call.incoming` shows a notification that stays until answered, declined or withdrawn;
// `call.stop_ringing` (cancelled, answered or declined elsewhere, timed out) closes it.
// Clicking it opens (or focuses) the app, which connects; the server rings the device
// again from its mailbox and the full-screen ring view appears. Nothing is cached for
// offline use: a call needs the server anyway.

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = {};
  }
  event.waitUntil(handlePush(data));
});

async function handlePush(data) {
  if (data.type === "call.incoming" && data.call_id) {
    const name = data.caller?.display_name || data.caller?.handle || "Someone";
    await self.registration.showNotification(`${name} is calling`, {
      tag: `call:${data.call_id}`,
      body: data.media === "audio" ? "Audio call — tap to answer" : "Video call — tap to answer",
      icon: "/icon.svg",
      requireInteraction: true,
      renotify: true,
      data,
    });
  } else if (data.type === "call.stop_ringing" && data.call_id) {
    await closeRing(data.call_id);
  }
}

async function closeRing(callId) {
  for (const n of await self.registration.getNotifications({ tag: `call:${callId}` })) n.close();
}

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(openApp(event.notification.data || {}));
});

async function openApp(data) {
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  for (const client of windows) {
    if ("focus" in client) return client.focus();
  }
  return self.clients.openWindow(data.call_id ? `/?ring=${encodeURIComponent(data.call_id)}` : "/");
}

// The page tells us a ring was handled there (answered, declined, stopped).
self.addEventListener("message", (event) => {
  if (event.data?.type === "ring.handled" && event.data.call_id) event.waitUntil(closeRing(event.data.call_id));
});
