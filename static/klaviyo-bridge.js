/*
 * flask-klaviyo in-page bridge.
 *
 * The server already tracked the events listed in #klaviyo-bridge-data (metric + unique_id).
 * A residual browser call for one of those metrics (klaviyo.track or _learnq.push(['track', ...]))
 * would count it twice, so it is dropped ("drop" mode, the default). Calls for other metrics
 * pass through untouched. Share mode (sending the call through Klaviyo's client endpoint with the
 * server's unique_id) is added with the identity work.
 */
(function () {
  "use strict";
  var el = document.getElementById("klaviyo-bridge-data");
  if (!el) { return; }
  var data;
  try { data = JSON.parse(el.textContent || "{}"); } catch (e) { return; }
  var events = data.events || [];
  var tracked = {};
  for (var i = 0; i < events.length; i++) { tracked[events[i].metric] = events[i].unique_id; }

  function serverTracked(metric) { return Object.prototype.hasOwnProperty.call(tracked, metric); }

  window.klaviyoBridge = {
    mode: data.mode || "drop",
    events: events,
    serverTracked: serverTracked,
    uniqueIdFor: function (metric) { return tracked[metric]; }
  };

  function wrapTrack(target) {
    if (!target || typeof target.track !== "function" || target.track.__klaviyoBridge) { return; }
    var original = target.track;
    var wrapped = function (metric) {
      if (serverTracked(metric)) { return undefined; }
      return original.apply(this, arguments);
    };
    wrapped.__klaviyoBridge = true;
    target.track = wrapped;
  }

  var learnq = window._learnq = window._learnq || [];
  if (!learnq.push.__klaviyoBridge) {
    var push = learnq.push;
    var wrappedPush = function (args) {
      if (args && args[0] === "track" && serverTracked(args[1])) { return learnq.length; }
      return push.apply(this, arguments);
    };
    wrappedPush.__klaviyoBridge = true;
    learnq.push = wrappedPush;
  }
  wrapTrack(window.klaviyo);
})();
