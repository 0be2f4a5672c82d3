"""Phone normalization and CRM match outcomes."""
from crmconnector.matching.phone import InvalidPhoneNumber, normalize, try_normalize, international
from crmconnector.matching.matcher import MatchResult, match_number, match_numbers, order_records

__all__ = ["InvalidPhoneNumber", "normalize", "try_normalize", "international",
           "MatchResult", "match_number", "match_numbers", "order_records"]
