"""crmconnector: an SMS contact-center platform's bridge to a Salesforce-style CRM."""

__version__ = "0.1.0"
