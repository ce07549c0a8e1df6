/*!
 * grip_eventstream client 0.1.0 -- an EventSource that keeps reconnecting.
 *
 * A browser's EventSource reconnects by itself after network errors, but gives up for good
 * on any answer other than 200. Right after Pushpin restarts it answers stream requests
 * with "500 Accept service unavailable" for a moment, so native EventSources opened or
 * reconnecting in that window stop receiving events until the page is reloaded.
 *
 * GripEventSource wraps EventSource: when the native one closes, it asks the server once
 * with fetch() (EventSource does not expose the status), and
 *   - on 4xx (403 permission denied, 400 bad request: answers that mean "do not retry")
 *     it stops and dispatches "error" with event.status;
 *   - on 5xx or a network error it waits (1 s, doubling up to maxRetryDelay) and tries
 *     again;
 *   - on 200 it reopens the EventSource,
 * always resuming from the last event id it received (as ?lastEventId=, which the view
 * reads when there is no Last-Event-ID header), so nothing is missed or repeated.
 *
 * Usage (same interface as EventSource):
 *   const source = new GripEventSource("/events/", {withCredentials: false});
 *   source.addEventListener("message", (e) => console.log(e.data, e.lastEventId));
 *   source.addEventListener("stream-reset", (e) => reload());
 *   source.close();
 *
 * Options: withCredentials; maxRetryDelay (ms, default 30000); lastEventId (resume after
 * this id from the first request); eventSourceClass (the EventSource class to wrap).
 *
 * The same class is also defined as ReconnectingEventSource, with the option names of
 * django-eventstream's client (max_retry_time for maxRetryDelay), and this file is also
 * served as grip_eventstream/reconnecting-eventsource.js, the name its templates load.
 */
(function (global) {
  "use strict";

  const CONNECTING = 0;
  const OPEN = 1;
  const CLOSED = 2;
  const CHECK_PARAMETER = "grip-check";

  class GripEventSource extends EventTarget {
    constructor(url, options) {
      super();
      options = options || {};
      this.url = String(url);
      this.withCredentials = Boolean(options.withCredentials);
      this.maxRetryDelay = options.maxRetryDelay || options.max_retry_time || 30000;
      this.readyState = CONNECTING;
      this.lastEventId = options.lastEventId ? String(options.lastEventId) : "";
      this._EventSource = options.eventSourceClass || global.EventSource;
      this.onopen = null;
      this.onmessage = null;
      this.onerror = null;
      this._types = new Set(["message"]);
      this._source = null;
      this._delay = 1000;
      this._timer = null;
      this._open();
    }

    addEventListener(type, listener, options) {
      // Forward this event type from the native EventSource, now and after reconnects.
      if (type !== "open" && type !== "error" && !this._types.has(type)) {
        this._types.add(type);
        if (this._source) {
          this._source.addEventListener(type, (event) => this._forward(event));
        }
      }
      super.addEventListener(type, listener, options);
    }

    close() {
      this.readyState = CLOSED;
      clearTimeout(this._timer);
      if (this._source) {
        this._source.close();
        this._source = null;
      }
    }

    _resumeUrl() {
      if (!this.lastEventId) {
        return this.url;
      }
      const url = new URL(this.url, global.location.href);
      url.searchParams.set("lastEventId", this.lastEventId);
      return url.toString();
    }

    _open() {
      const source = new this._EventSource(this._resumeUrl(), {
        withCredentials: this.withCredentials,
      });
      this._source = source;
      source.onopen = () => {
        this.readyState = OPEN;
        this._delay = 1000;
        this._emit(new Event("open"), this.onopen);
      };
      source.onerror = () => {
        if (this._source !== source || this.readyState === CLOSED) {
          return;
        }
        if (source.readyState === CLOSED) {
          // The native EventSource gave up (a non-200 answer): decide ourselves.
          source.close();
          this._source = null;
          this._check();
        } else {
          this.readyState = CONNECTING; // it retries by itself (network error)
        }
        this._emit(new Event("error"), this.onerror);
      };
      for (const type of this._types) {
        source.addEventListener(type, (event) => this._forward(event));
      }
    }

    _forward(event) {
      if (event.lastEventId !== undefined) {
        this.lastEventId = event.lastEventId;
      }
      const copy = new MessageEvent(event.type, {
        data: event.data,
        lastEventId: event.lastEventId,
        origin: event.origin,
      });
      this._emit(copy, event.type === "message" ? this.onmessage : null);
    }

    _emit(event, handler) {
      if (typeof handler === "function") {
        handler.call(this, event);
      }
      this.dispatchEvent(event);
    }

    _check() {
      this.readyState = CONNECTING;
      const controller = new AbortController();
      // Marked as a check, so that the server does not count it as one more open stream
      // (presence): it is aborted as soon as its status is known.
      const url = new URL(this._resumeUrl(), global.location.href);
      url.searchParams.set(CHECK_PARAMETER, "1");
      global
        .fetch(url.toString(), {
          headers: { Accept: "text/event-stream" },
          credentials: this.withCredentials ? "include" : "same-origin",
          cache: "no-store",
          signal: controller.signal,
        })
        .then((response) => {
          controller.abort(); // only the status was wanted, not a second stream
          if (this.readyState === CLOSED) {
            return;
          }
          if (response.status >= 400 && response.status < 500) {
            this.readyState = CLOSED;
            const event = new Event("error");
            event.status = response.status;
            this._emit(event, this.onerror);
          } else if (response.status === 200) {
            this._open();
          } else {
            this._retry();
          }
        })
        .catch(() => {
          if (this.readyState !== CLOSED) {
            this._retry();
          }
        });
    }

    _retry() {
      const delay = this._delay;
      this._delay = Math.min(this._delay * 2, this.maxRetryDelay);
      this._timer = setTimeout(() => this._check(), delay);
    }
  }

  GripEventSource.CONNECTING = CONNECTING;
  GripEventSource.OPEN = OPEN;
  GripEventSource.CLOSED = CLOSED;
  global.GripEventSource = GripEventSource;
  global.ReconnectingEventSource = GripEventSource;
})(window);
