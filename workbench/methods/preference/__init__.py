"""The preference family (DPO, IPO, SimPO, ORPO, RPO, TPO, ASFT, KTO, MODPO): losses and module."""
