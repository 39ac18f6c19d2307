"""The agent's configuration: config.xml, its options and the one store that changes them.

By concern:

- :mod:`iofogd.config.schema`: the option table (one keyword row per option)
  and the Java text rules the validators follow (docs/config-xml.md#validation).
- :mod:`iofogd.config.value`: :class:`Config`, an immutable snapshot, raw XML
  text through :meth:`Config.get`, typed values as attributes.
- :mod:`iofogd.config.xmlfile`: config.xml and config-switcher.xml, parsed and
  rendered; reading without writing (the CLI, ``--check-config``).
- :mod:`iofogd.config.store`: :class:`ConfigStore`, the only writer, with
  ``apply(changes, origin)`` and listeners told the origin.
- :mod:`iofogd.config.gps`: :class:`GpsUpdates`, positions from ``POST /v2/gps``
  written at a bounded rate, never over the admin's GPS mode (issue 12).

The Controller's view of these options is :mod:`iofogd.controller.agentconfig`;
the files' locations :mod:`iofogd.paths`; the admin token
:mod:`iofogd.admintoken`.

Deliberate differences from the Java agent (see docs/compatibility.md):

- ``-gps auto`` never asks ip-api.com (no calls to outside services); it keeps the
  stored coordinates, as upstream does when that call fails.
- ``-n`` accepts ``dynamic`` or the name of an interface that exists on this host
  (``socket.if_nameindex()`` and ``/sys/class/net``, case-insensitive). Upstream's
  loop accepts any name on Linux (docs/config-xml.md#validation).
- Coordinates must be ``<lat>,<lon>`` with the comma (upstream's regex makes it
  optional and then crashes on the split); ``NaN``/``Infinity`` are not numbers.
- A blank value is an error only, not also "Change accepted" (upstream reports both).
- Values with control characters are refused (upstream would write a file its own
  parser then rejects).
- An unparseable stored value is replaced by the code default with a warning,
  like a missing element, instead of stopping the daemon.
- ``on``/``off`` are read case-insensitively everywhere (upstream: ``OFF`` is on).
- From the Controller's ``agent/config``, missing or ``null`` keys leave the local
  value alone (upstream resets them to code defaults or fails the whole update).

Our additions: the tags ``local_api_address`` (default ``0.0.0.0``) and
``local_api_port`` (default ``54321``) say where the Local API listens;
``strict_microservice_identity`` (``-smi``, default ``off``) refuses the
microservice endpoints to callers that are not a container of this agent
(iofogd/system/identity.py). The Java agent ignores unknown tags, and so do we:
unknown elements are kept on rewrite.

Issue 12: directory options may not leave ``--root``, URL options take only
http(s) (the Docker URL unix:// and tcp://) within length bounds, and values are
stored stripped, as config.xml gives them back on reload.
"""
from __future__ import annotations

from iofogd.config.schema import OPTIONS, Option, code_defaults, shipped_values
from iofogd.config.store import ChangeReport, ConfigStore, Origin
from iofogd.config.value import Config
from iofogd.config.xmlfile import check_config, parse_config_xml, read_config, render_config_xml

__all__ = [
    "OPTIONS", "ChangeReport", "Config", "ConfigStore", "Option", "Origin", "check_config", "code_defaults",
    "parse_config_xml", "read_config", "render_config_xml", "shipped_values",
]
