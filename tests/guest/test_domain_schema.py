"""Validation against libvirt's RelaxNG schema."""

from __future__ import annotations

import pytest
from guest_samples import SCHEMA_INVALID_XML, build_guest

from wattvisor.guest import (
    GuestXMLError,
    InstanceMetadata,
    MalformedXMLError,
    NotADomainError,
    SchemaError,
    validate_domain_xml,
)
from wattvisor.guest.schema import domain_schema


def test_built_guest_is_valid(metadata: InstanceMetadata) -> None:
    validate_domain_xml(build_guest(metadata).to_xml())
    build_guest(metadata).validate()


def test_invalid_document_reports_first_error_with_its_line() -> None:
    with pytest.raises(SchemaError) as info:
        validate_domain_xml(SCHEMA_INVALID_XML)
    error = info.value
    assert error.line == 7  # libxml2 places the error at <devices>
    assert "devices" in error.detail and str(error).startswith("line 7: ")
    assert error.errors and isinstance(error, GuestXMLError)


def test_missing_name_and_bad_value_are_reported_with_line() -> None:
    with pytest.raises(SchemaError, match="Expecting an element name"):
        validate_domain_xml("<domain type='qemu'/>")
    with pytest.raises(SchemaError) as info:
        validate_domain_xml("<domain type='qemu'>\n<name>x</name>\n<vcpu>many</vcpu></domain>")
    assert info.value.line == 3 and "'many'" in info.value.detail


def test_a_document_that_is_not_a_domain_is_refused_before_the_schema() -> None:
    with pytest.raises(NotADomainError, match="<network>"):
        validate_domain_xml("<network><name>default</name></network>")


def test_malformed_text_is_a_malformed_xml_error_not_a_schema_error() -> None:
    with pytest.raises(MalformedXMLError):
        validate_domain_xml("<domain")


def test_schema_is_loaded_once() -> None:
    assert domain_schema() is domain_schema()
