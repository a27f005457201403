"""crmbook: a reproducible Jupyter workbook for CRM analytics."""
__version__ = "0.1.0"
