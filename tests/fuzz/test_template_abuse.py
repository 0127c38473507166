"""Notification templates written to escape the Jinja2 sandbox or to exhaust the router: Python's
internals reached by attribute, item, filter or format string; work without end (nested loops,
a macro calling itself twice, recursion); output without end (a width of a billion, a text
doubled forty times, a list joined or written whole, a loop writing a long text each time).
Each is refused with a clear reason, fast, by `render` (the sender) and by the configuration's
check (the router never starts with it); none hangs, none fills the memory."""

from __future__ import annotations

import textwrap
import time

import pytest

from rulesengine.config import ConfigError, load_config
from rulesengine.config.notification_templates import TemplateProblem, render

CONTEXT = {"reason": "x", "event": "delivery-dead", "notification": {"reason": "x"}}

ESCAPES = [
    "{{ reason.__class__.__mro__ }}",
    "{{ reason['__class__'] }}",
    "{{ reason|attr('__cla' ~ 'ss__') }}.{{ (reason|attr('__cla' ~ 'ss__')).mro() }}",
    "{{ '{0.__class__.__mro__}'.format(reason) }}",
    "{{ '{0.__class__}'.format_map({'0': reason}) }}",
    "{{ ''.format.__self__ }}",
    "{{ notification.items.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{% set l = [1] %}{% for i in range(40) %}{{ l.extend(l) }}{% endfor %}",
    "{{ notification.update({'reason': 'changed'}) }}",
]

EXHAUSTING = [
    "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}",
    "{% macro m(n) %}{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}{{ m(40) }}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}",
    "{{ range(10**9) | list }}",
    "{{ 9 ** 99999999 }}",
    "{{ 'x' | center(999999999) }}",
    "{{ 'x' | indent(999999999) }}",
    "{{ 'a\nb' | indent('x' * 999999) }}",
    "{{ '%999999999s' % reason }}",
    "{{ '%999999999s' | format(reason) }}",
    "{{ '{:999999999}'.format(reason) }}",
    "{{ ('x' * 999999) | replace('x', 'x' * 999999) }}",
    "{{ (['x' * 999999] * 999999) | join }}",
    "{{ ['x' * 999999] * 999999 }}",
    "{{ (['x' * 999999] * 999999) | tojson }}",
    "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% else %}{{ s | length }}{% endif %}{% endmacro %}"
    "{{ d('x', 40) }}",
    "{% macro d(s, n) %}{% if n %}{{ d(s + s, n - 1) }}{% else %}{{ s | length }}{% endif %}{% endmacro %}"
    "{{ d('x', 40) }}",
    "{% for i in range(100000) %}{{ 'x' * 999999 }}{% endfor %}",
    "{% set x %}{% for i in range(100000) %}{{ 'x' * 999999 }}{% endfor %}{% endset %}{{ x | length }}",
    "{{ ((9 ** 64) ** 64) ** 64 }}",
]


@pytest.mark.parametrize("template", ESCAPES + EXHAUSTING)
@pytest.mark.parametrize("kind", ["text", "json"])
def test_a_hostile_template_is_refused_quickly_with_a_reason_or_writes_nothing_of_python(template, kind):
    started = time.monotonic()
    try:
        text = render(template, kind, CONTEXT)
    except TemplateProblem as refused:
        assert str(refused) and "Traceback" not in str(refused)
    else:  # what the sandbox let through wrote nothing of Python's internals
        assert template in ESCAPES and not any(word in text for word in ("class", "module", "function", "uid="))
    assert time.monotonic() - started < 3  # the slowest, a macro's 100,000 calls, takes about one second


def test_the_context_is_left_as_it_was():
    context = {"reason": "x", "notification": {"reason": "x"}}
    with pytest.raises(TemplateProblem):
        render("{{ notification.update({'reason': 'changed'}) }}", "text", context)
    assert context["notification"] == {"reason": "x"}


def test_what_real_templates_do_is_still_allowed():
    assert render("{{ reason ~ '-' ~ 3 }}{% for k in [1, 2] %} {{ loop.index }}/{{ loop.length }}{% endfor %}"
                  "{% for k in [] %}{% else %} none{% endfor %}", "text", CONTEXT) == "x-3 1/2 2/2 none"
    assert render("{{ 'a,b' | replace(',', ';') }} {{ ['a', 'b'] | join(', ') }} [{{ 'x' | center(5) }}] "
                  "{{ 'a\nb' | indent(2) }} {{ '%05d' | format(3) }} {{ '{:>4}'.format('x') }} {{ 2 ** 10 }} "
                  "{{ 'ab' * 2 }} {{ 'a' + 'b' }} {{ 7 % 3 }} {{ ('w ' * 3) | wordwrap(2) | length }}",
                  "text", CONTEXT) == "a;b a, b [  x  ] a\n  b 00003    x 1024 abab ab 1 5"
    assert render('{"n": {{ range(3) | list }}, "r": {{ reason }}}', "json", CONTEXT) == '{"n": [0, 1, 2], "r": "x"}'


@pytest.mark.parametrize("template", [EXHAUSTING[0], EXHAUSTING[1], EXHAUSTING[6], EXHAUSTING[-3]])
def test_the_configuration_refuses_them_with_the_file_and_line(tmp_path, template):
    (tmp_path / "main.rules").write_text('rule "all" {\n  then route to PACS\n}\n', encoding="utf-8")
    path = tmp_path / "router.yaml"
    path.write_text("storage: var\nrules: main.rules\n"
                    "destinations:\n  PACS: {type: dicom, ae_title: PACS, host: 127.0.0.1, port: 1}\n"
                    + textwrap.dedent(f"""\
                        notifiers:
                          mail:
                            type: email
                            host: 127.0.0.1
                            from: router@example.org
                            to: [ops@example.org]
                            tls: none
                            body: {template!r}
                        """), encoding="utf-8")
    started = time.monotonic()
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert f"{path}:12: notifiers.mail.body:" in str(refused.value) and "sandbox" in str(refused.value)
    assert time.monotonic() - started < 3
