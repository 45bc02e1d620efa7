"""The root command group that imports a command's module only when that command runs.

``headend read`` should not pay for importing billing, the console or the simulators: each top-level
name maps to the command module that registers it, imported (and registered, once) the first time
click asks for that name. ``headend --help`` lists every name and so imports every module.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import ClassVar

import typer
from typer import _click as click  # typer carries its own click; its groups are not click.Group
from typer.core import TyperGroup

from headend.commands.app import CommandGroup


class _Modules:
    """The commands of each command module imported so far."""

    def __init__(self) -> None:
        self.loaded: set[str] = set()
        self.commands: dict[str, click.Command] = {}

    def command(self, name: str, module: str) -> click.Command | None:
        if module not in self.loaded:
            holder = CommandGroup()
            holder.callback()(lambda: None)  # a group even when the module registers one command
            importlib.import_module(f"headend.commands.{module}").register(holder)
            group = typer.main.get_command(holder)
            assert isinstance(group, TyperGroup)
            self.commands.update(group.commands)
            self.loaded.add(module)
        return self.commands.get(name)


class LazyCommands(TyperGroup):
    """A ``TyperGroup`` whose commands beyond its own are named in ``command_modules`` (name: the
    module under headend/commands/ that registers it) and imported on use."""

    command_modules: ClassVar[Mapping[str, str]] = {}
    _modules = _Modules()

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *self.command_modules]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        own = super().get_command(ctx, cmd_name)
        if own is not None or cmd_name not in self.command_modules:
            return own
        return self._modules.command(cmd_name, self.command_modules[cmd_name])
