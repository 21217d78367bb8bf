/*
 * flask-klaviyo in-page bridge. Rendered by {{ klaviyo_bridge() }} right after its JSON blob,
 * #klaviyo-bridge-data: {mode, companyId, events: [{metric, unique_id, profile?}], identify?,
 * clientUrl?, revision?}. No dependencies; ES5 plus Proxy and WeakMap.
 *
 * The server already tracked `events`. A residual browser call for one of those metrics --
 * klaviyo.track(metric, props), klaviyo.push(['track', metric, props]) or
 * _learnq.push(['track', metric, props]) -- would count it twice, so it is:
 *   - dropped ("drop" mode, the default); or
 *   - in "share" mode, sent once to Klaviyo's client endpoint (POST {clientUrl}/client/events)
 *     with the call's own properties, the server's unique_id and the server's profile
 *     identifiers, so Klaviyo keeps one event. When the server tracked the metric several times
 *     on this page (which call is which?) or for an anonymous visitor, the call is dropped.
 * Calls for other metrics pass through untouched.
 *
 * How: window.klaviyo and window._learnq become accessors whose getter returns a guarded view
 * (a Proxy) of whatever was assigned, so the object klaviyo.js installs later is guarded too,
 * and methods it reassigns are wrapped again when read. Calls queued before this script ran
 * (_klOnsite, _learnq) are filtered once. If a script redefines the properties, they are taken
 * over again after every resource load and on a few timers.
 */
(function (window, document) {
  "use strict";
  var el = document.getElementById("klaviyo-bridge-data");
  if (!el || window.klaviyoBridge || typeof Proxy !== "function" || typeof WeakMap !== "function") {
    return;
  }
  var data;
  try { data = JSON.parse(el.textContent || "{}"); } catch (e) { return; }
  var share = data.mode === "share";
  var events = data.events || [];
  var byMetric = Object.create(null);  // metric -> the server's events for it on this page
  var sent = Object.create(null);      // metric -> already shared once
  for (var i = 0; i < events.length; i++) {
    (byMetric[events[i].metric] = byMetric[events[i].metric] || []).push(events[i]);
  }

  function own(obj, key) { return Object.prototype.hasOwnProperty.call(obj, key); }
  function tracked(metric) { return typeof metric === "string" && own(byMetric, metric); }
  function isFunction(value) { return typeof value === "function"; }

  // A residual call for a tracked metric: share it (once) or drop it. done(ok) always runs.
  function handle(metric, props, done) {
    var matches = byMetric[metric];
    if (share && matches.length === 1 && matches[0].profile && !own(sent, metric)) {
      sent[metric] = true;
      send(matches[0], props, done);
    } else {
      done(true);
    }
  }

  function send(event, props, done) {
    var properties = {};
    for (var key in (props && typeof props === "object" ? props : {})) {
      if (own(props, key) && key !== "$event_id") { properties[key] = props[key]; }
    }
    var attributes = {
      properties: properties,
      metric: { data: { type: "metric", attributes: { name: event.metric } } },
      profile: { data: { type: "profile", attributes: event.profile } },
      unique_id: event.unique_id
    };
    if (typeof properties.$value === "number") {
      attributes.value = properties.$value;
      delete properties.$value;
    }
    var xhr = new XMLHttpRequest();
    try {
      xhr.open("POST", data.clientUrl + "/client/events?company_id=" +
        encodeURIComponent(data.companyId));
      xhr.setRequestHeader("Content-Type", "application/vnd.api+json");
      xhr.setRequestHeader("revision", data.revision);
      xhr.onloadend = function () { done(xhr.status >= 200 && xhr.status < 300); };
      xhr.send(JSON.stringify({ data: { type: "event", attributes: attributes } }));
    } catch (e) {  // never break the page's own script over a tracking call
      done(false);
    }
  }

  // ['track', metric, props?, callback?]: a queued or pushed track call for a tracked metric.
  function residual(args) {
    return !!args && typeof args === "object" && args[0] === "track" && tracked(args[1]);
  }
  function handleArgs(args) {
    var last = args[args.length - 1];
    handle(args[1], isFunction(args[2]) ? {} : args[2], function (ok) {
      if (args.length > 2 && isFunction(last)) { last(ok); }
    });
  }

  // klaviyo.track(metric, props?, callback?) -> Promise, like the klaviyo object's.
  function wrapTrack(track, self) {
    return function (metric, props, callback) {
      if (!tracked(metric)) { return track.apply(self, arguments); }
      if (isFunction(props)) { callback = props; props = {}; }
      return new Promise(function (resolve) {
        handle(metric, props, function (ok) {
          if (isFunction(callback)) { callback(ok); }
          resolve(ok);
        });
      });
    };
  }

  // klaviyo.push([...], ...) and _learnq.push([...], ...): keep the calls that are not residual.
  function wrapPush(push, self) {
    return function () {
      var keep = [];
      for (var n = 0; n < arguments.length; n++) {
        if (residual(arguments[n])) { handleArgs(arguments[n]); } else { keep.push(arguments[n]); }
      }
      if (keep.length || !arguments.length) { return push.apply(self, keep); }
      return self.length;
    };
  }

  var guards = new WeakMap();  // object -> its guarded view
  var views = new WeakMap();   // guarded view -> object

  // A view of `target` whose listed methods are wrapped whenever they are read.
  function guard(target, wrappers) {
    if (!target || (typeof target !== "object" && !isFunction(target)) || views.has(target)) {
      return target;
    }
    if (!guards.has(target)) {
      var wrapped = new WeakMap();  // this object's original method -> its wrapper
      var view = new Proxy(target, {
        get: function (obj, key) {
          var value = obj[key];
          var desc = Object.getOwnPropertyDescriptor(obj, key);
          if (!isFunction(value) || !own(wrappers, key) || (desc && !desc.configurable &&
              !desc.writable)) {
            return value;  // (a frozen method must be returned as is: a Proxy invariant)
          }
          if (!wrapped.has(value)) { wrapped.set(value, wrappers[key](value, obj)); }
          return wrapped.get(value);
        }
      });
      guards.set(target, view);
      views.set(view, target);
    }
    return guards.get(target);
  }

  // Keep window[name] guarded, whatever is assigned to it and whenever.
  function watch(name, wrappers) {
    var current;
    function get() { return current; }
    function set(value) { current = guard(value, wrappers); }
    return function ensure() {
      var desc = Object.getOwnPropertyDescriptor(window, name);
      if (desc && desc.get === get) { return; }
      set(window[name]);
      try {
        Object.defineProperty(window, name, { configurable: true, enumerable: true,
                                              get: get, set: set });
      } catch (e) {  // a top-level `var _learnq` cannot be redefined, but it can be assigned
        if (window[name] !== current) { window[name] = current; }
      }
    };
  }

  // Calls queued before this script ran (klaviyo.js has not taken the queues over yet).
  function filterQueue(queue) {
    if (!Array.isArray(queue)) { return; }
    var keep = [];
    for (var n = 0; n < queue.length; n++) {
      if (residual(queue[n])) { handleArgs(queue[n]); } else { keep.push(queue[n]); }
    }
    queue.length = 0;
    Array.prototype.push.apply(queue, keep);
  }
  filterQueue(window._klOnsite);
  filterQueue(window._learnq);

  var ensureKlaviyo = watch("klaviyo", { track: wrapTrack, push: wrapPush });
  var ensureLearnq = watch("_learnq", { push: wrapPush });
  function ensure() { ensureKlaviyo(); ensureLearnq(); }
  ensure();

  if (!window.klaviyo) {
    // The klaviyo object stub: calls made before klaviyo.js loads wait in _klOnsite.
    window._klOnsite = window._klOnsite || [];
    var stub = { push: function () { window._klOnsite.push.apply(window._klOnsite, arguments); } };
    var methods = ["identify", "track", "trackViewedItem", "openForm", "account", "cookieDomain",
                   "isIdentified"];
    for (var m = 0; m < methods.length; m++) {
      stub[methods[m]] = (function (method) {
        return function () {
          var args = Array.prototype.slice.call(arguments);
          var callback = isFunction(args[args.length - 1]) ? args.pop() : null;
          return new Promise(function (resolve) {
            window._klOnsite.push([method].concat(args, [function (result) {
              if (callback) { callback(result); }
              resolve(result);
            }]));
          });
        };
      })(methods[m]);
    }
    window.klaviyo = stub;
  }
  if (data.identify) { window.klaviyo.identify(data.identify); }

  document.addEventListener("load", ensure, true);  // after every script (klaviyo.js) loads
  window.addEventListener("load", ensure);
  var delays = [100, 1000, 3000, 10000];
  for (var d = 0; d < delays.length; d++) { setTimeout(ensure, delays[d]); }

  window.klaviyoBridge = {
    mode: share ? "share" : "drop",
    events: events,
    serverTracked: tracked
  };
})(window, document);
