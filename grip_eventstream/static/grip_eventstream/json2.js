/*!
 * grip_eventstream json2.js 0.1.0 -- does nothing, on purpose.
 *
 * django-eventstream ships static/django_eventstream/json2.js, Douglas Crockford's JSON
 * polyfill for browsers without a native JSON object (Internet Explorer 7 and older), and
 * its templates load it before its EventSource scripts. Every browser this library
 * supports has native JSON (and EventSource), so this file defines nothing and runs
 * nothing: it exists so that a template moved from django-eventstream, which loads
 *   {% static 'grip_eventstream/json2.js' %}
 * keeps rendering (a manifest static storage refuses a name it has no file for) and keeps
 * loading. Such a script tag can simply be removed.
 */
