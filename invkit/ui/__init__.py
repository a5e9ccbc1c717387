"""``invkit ui``: the interactive inversion and editing page.

:mod:`.session` (the models: invert, edit, mix, export) and :mod:`.sources` (what the command
line names) import no Gradio and are tested without a browser; :mod:`.page` is the Gradio layout,
imported only when the page is served (the ``[ui]`` extra).
"""
