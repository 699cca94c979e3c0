"""Sphinx extension: write each inline ``<script>`` of a page once.

sphinx-thebe (loaded by Jupyter Book) registers an inline script that declares
``const THEBE_JS_URL``. Sphinx 7.4's HTML builder adds extension scripts registered after
its start a second time when it prepares writing, with ``filename=""`` instead of ``None``,
so the duplicate is not recognised and every page carried the script twice: the browser
then threw "Identifier 'THEBE_JS_URL' has already been declared" (``tests/book/test_browser.py``
found it). This drops repeated scripts (same file, same attributes and body) from each page.
"""

from __future__ import annotations


def _unique_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        if hasattr(script, "attributes"):  # sphinx.builders.html._assets._JavaScript
            key = (str(script.filename or ""), tuple(sorted((k, str(v)) for k, v in script.attributes.items())))
        else:  # a plain file name
            key = (str(script), ())
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _unique_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
