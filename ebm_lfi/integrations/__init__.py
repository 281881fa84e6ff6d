r"""Bridges to other libraries: pyabc and sbi.

Each bridge is a submodule imported on demand, so that ebm_lfi itself needs neither library:

- :mod:`ebm_lfi.integrations.pyabc`: learned statistics as a pyabc ``Sumstat``, and pyabc's
  ``History`` as an ebm_lfi :class:`~ebm_lfi.Posterior`.
- :mod:`ebm_lfi.integrations.sbi`: sbi priors and simulators, the statistics network as an sbi
  embedding net, and ebm_lfi posteriors where sbi expects one.
"""

__all__: list[str] = []
