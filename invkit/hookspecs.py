"""The plugin hooks of invkit (pluggy project name ``invkit``).

A plugin is a module listed under the ``invkit`` entry-point group of its distribution::

    [project.entry-points.invkit]
    my_adapter = "my_package.invkit_plugin"

that defines functions decorated with :data:`hookimpl`. invkit's own adapters, editors and
recipes are registered exactly this way. See ``docs/plugins.md``.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("invkit")
hookimpl = pluggy.HookimplMarker("invkit")


@hookspec
def register_generators(register):
    """Register generator adapters.

    Call ``register(name, load, from_config=None, description="")`` once per adapter:

    * ``load(checkpoint, device) -> Generator`` builds a generator from an
      :class:`invkit.io.checkpoint.CheckpointFile` (a path with cached, safe readers);
    * ``from_config(config, state_dict, device) -> Generator`` (optional) rebuilds one from
      invkit's own safetensors + JSON format, where ``config`` is ``Generator.config``.
    """


@hookspec
def register_editors(register):
    """Register editors: ``register(name, factory, description="")``, where ``factory()``
    returns an :class:`invkit.editor.Editor`."""


@hookspec
def register_recipes(register):
    """Register training recipes: ``register(name, factory, description="")``, where
    ``factory()`` returns the recipe's typed config object."""


@hookspec(firstresult=True)
def identify_checkpoint(checkpoint):
    """Return the name of the adapter that can load ``checkpoint`` (an
    :class:`invkit.io.checkpoint.CheckpointFile`), or None. Inspect its contents (``format``,
    ``torch_object()``, ...), never just the file name. The first non-None answer wins."""
