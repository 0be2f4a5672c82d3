"""initial schema: the connector's state and the embedded CRM's tables

Revision ID: 0001
Revises:
Create Date: 2026-11-22 04:59:33.338577
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('abandoned_calls',
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('caller_number', sa.String(length=32), nullable=False),
    sa.Column('dialed_number', sa.String(length=32), nullable=True),
    sa.Column('queue', sa.JSON(), nullable=True),
    sa.Column('lang', sa.String(length=32), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('abandoned_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('wait_seconds', sa.Integer(), nullable=True),
    sa.Column('sms_status', sa.String(length=16), nullable=True),
    sa.Column('sms_messages', sa.JSON(), nullable=False),
    sa.Column('case_id', sa.String(length=18), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempted_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('abandoned_calls', schema=None) as batch_op:
        batch_op.create_index('ix_abandoned_status', ['status'], unique=False)

    op.create_table('agents',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('email')
    )
    op.create_table('app_settings',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('chat_activity',
    sa.Column('chat_id', sa.String(length=200), nullable=False),
    sa.Column('event_id', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('chat_id', 'event_id')
    )
    with op.batch_alter_table('chat_activity', schema=None) as batch_op:
        batch_op.create_index('ix_chat_activity_chat_at', ['chat_id', 'at'], unique=False)

    op.create_table('chat_media',
    sa.Column('chat_id', sa.String(length=200), nullable=False),
    sa.Column('message_id', sa.String(length=200), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('content_version_id', sa.String(length=18), nullable=True),
    sa.PrimaryKeyConstraint('chat_id', 'message_id', 'position')
    )
    op.create_table('chat_messages',
    sa.Column('chat_id', sa.String(length=200), nullable=False),
    sa.Column('message_id', sa.String(length=200), nullable=False),
    sa.Column('sender', sa.String(length=16), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('agent', sa.JSON(), nullable=True),
    sa.Column('media', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('chat_id', 'message_id')
    )
    with op.batch_alter_table('chat_messages', schema=None) as batch_op:
        batch_op.create_index('ix_chat_messages_chat_sent', ['chat_id', 'sent_at'], unique=False)

    op.create_table('chats',
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('started', sa.Boolean(), nullable=False),
    sa.Column('direction', sa.String(length=16), nullable=True),
    sa.Column('consumer_number', sa.String(length=32), nullable=True),
    sa.Column('business_number', sa.String(length=32), nullable=True),
    sa.Column('queue_id', sa.String(length=200), nullable=True),
    sa.Column('queue_name', sa.String(length=255), nullable=True),
    sa.Column('lang', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('match_outcome', sa.String(length=16), nullable=True),
    sa.Column('match_records', sa.JSON(), nullable=True),
    sa.Column('screen_pop', sa.JSON(), nullable=True),
    sa.Column('linked_object', sa.String(length=32), nullable=True),
    sa.Column('linked_id', sa.String(length=18), nullable=True),
    sa.Column('linked_account_id', sa.String(length=18), nullable=True),
    sa.Column('agent_id', sa.String(length=200), nullable=True),
    sa.Column('agent_email', sa.String(length=320), nullable=True),
    sa.Column('agent_name', sa.String(length=255), nullable=True),
    sa.Column('assigned_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('disconnected_by', sa.String(length=16), nullable=True),
    sa.Column('disposition', sa.String(length=255), nullable=True),
    sa.Column('task_id', sa.String(length=18), nullable=True),
    sa.Column('crm_status', sa.String(length=16), nullable=True),
    sa.Column('crm_error', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('chats', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chats_agent_email'), ['agent_email'], unique=False)
        batch_op.create_index(batch_op.f('ix_chats_agent_id'), ['agent_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_chats_consumer_number'), ['consumer_number'], unique=False)

    op.create_table('console_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('agent_email', sa.String(length=320), nullable=False),
    sa.Column('chat_id', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('console_events', schema=None) as batch_op:
        batch_op.create_index('ix_console_events_agent_id', ['agent_email', 'id'], unique=False)

    op.create_table('crm_account',
    sa.Column('Id', sa.String(length=18), nullable=False),
    sa.Column('Name', sa.String(length=255), nullable=True),
    sa.Column('Phone', sa.String(length=40), nullable=True),
    sa.Column('Type', sa.String(length=255), nullable=True),
    sa.Column('Industry', sa.String(length=255), nullable=True),
    sa.Column('Website', sa.String(length=255), nullable=True),
    sa.Column('Description', sa.Text(), nullable=True),
    sa.Column('CreatedDate', sa.DateTime(timezone=True), nullable=False),
    sa.Column('LastModifiedDate', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('Id')
    )
    op.create_table('crm_blobs',
    sa.Column('id', sa.String(length=18), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('crm_case',
    sa.Column('Id', sa.String(length=18), nullable=False),
    sa.Column('Subject', sa.String(length=255), nullable=True),
    sa.Column('Description', sa.Text(), nullable=True),
    sa.Column('Origin', sa.String(length=255), nullable=True),
    sa.Column('Status', sa.String(length=255), nullable=True),
    sa.Column('Priority', sa.String(length=255), nullable=True),
    sa.Column('SuppliedPhone', sa.String(length=40), nullable=True),
    sa.Column('ContactId', sa.String(length=18), nullable=True),
    sa.Column('AccountId', sa.String(length=18), nullable=True),
    sa.Column('CreatedDate', sa.DateTime(timezone=True), nullable=False),
    sa.Column('LastModifiedDate', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('Id')
    )
    with op.batch_alter_table('crm_case', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_crm_case_AccountId'), ['AccountId'], unique=False)
        batch_op.create_index(batch_op.f('ix_crm_case_ContactId'), ['ContactId'], unique=False)
        batch_op.create_index(batch_op.f('ix_crm_case_Subject'), ['Subject'], unique=False)

    op.create_table('crm_contact',
    sa.Column('Id', sa.String(length=18), nullable=False),
    sa.Column('FirstName', sa.String(length=40), nullable=True),
    sa.Column('LastName', sa.String(length=80), nullable=True),
    sa.Column('AccountId', sa.String(length=18), nullable=True),
    sa.Column('Email', sa.String(length=80), nullable=True),
    sa.Column('Phone', sa.String(length=40), nullable=True),
    sa.Column('MobilePhone', sa.String(length=40), nullable=True),
    sa.Column('HomePhone', sa.String(length=40), nullable=True),
    sa.Column('OtherPhone', sa.String(length=40), nullable=True),
    sa.Column('Title', sa.String(length=128), nullable=True),
    sa.Column('DoNotCall', sa.Boolean(), nullable=True),
    sa.Column('Description', sa.Text(), nullable=True),
    sa.Column('CreatedDate', sa.DateTime(timezone=True), nullable=False),
    sa.Column('LastModifiedDate', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('Id')
    )
    with op.batch_alter_table('crm_contact', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_crm_contact_AccountId'), ['AccountId'], unique=False)

    op.create_table('crm_contentversion',
    sa.Column('Id', sa.String(length=18), nullable=False),
    sa.Column('Title', sa.String(length=255), nullable=True),
    sa.Column('PathOnClient', sa.String(length=500), nullable=True),
    sa.Column('FirstPublishLocationId', sa.String(length=18), nullable=True),
    sa.Column('Description', sa.Text(), nullable=True),
    sa.Column('ContentDocumentId', sa.String(length=18), nullable=True),
    sa.Column('ContentSize', sa.Integer(), nullable=True),
    sa.Column('FileExtension', sa.String(length=40), nullable=True),
    sa.Column('CreatedDate', sa.DateTime(timezone=True), nullable=False),
    sa.Column('LastModifiedDate', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('Id')
    )
    with op.batch_alter_table('crm_contentversion', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_crm_contentversion_FirstPublishLocationId'), ['FirstPublishLocationId'], unique=False)

    op.create_table('crm_lead',
    sa.Column('Id', sa.String(length=18), nullable=False),
    sa.Column('FirstName', sa.String(length=40), nullable=True),
    sa.Column('LastName', sa.String(length=80), nullable=True),
    sa.Column('Company', sa.String(length=255), nullable=True),
    sa.Column('Email', sa.String(length=80), nullable=True),
    sa.Column('Phone', sa.String(length=40), nullable=True),
    sa.Column('MobilePhone', sa.String(length=40), nullable=True),
    sa.Column('Status', sa.String(length=255), nullable=True),
    sa.Column('DoNotCall', sa.Boolean(), nullable=True),
    sa.Column('Description', sa.Text(), nullable=True),
    sa.Column('CreatedDate', sa.DateTime(timezone=True), nullable=False),
    sa.Column('LastModifiedDate', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('Id')
    )
    op.create_table('crm_phone_index',
    sa.Column('object', sa.String(length=32), nullable=False),
    sa.Column('record_id', sa.String(length=18), nullable=False),
    sa.Column('field', sa.String(length=40), nullable=False),
    sa.Column('e164', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('object', 'record_id', 'field')
    )
    with op.batch_alter_table('crm_phone_index', schema=None) as batch_op:
        batch_op.create_index('ix_crm_phone_index_e164', ['e164'], unique=False)

    op.create_table('crm_task',
    sa.Column('Id', sa.String(length=18), nullable=False),
    sa.Column('Subject', sa.String(length=255), nullable=True),
    sa.Column('Description', sa.Text(), nullable=True),
    sa.Column('CallObject', sa.String(length=255), nullable=True),
    sa.Column('CallType', sa.String(length=40), nullable=True),
    sa.Column('CallDisposition', sa.String(length=255), nullable=True),
    sa.Column('CallDurationInSeconds', sa.Integer(), nullable=True),
    sa.Column('Status', sa.String(length=40), nullable=True),
    sa.Column('Priority', sa.String(length=40), nullable=True),
    sa.Column('ActivityDate', sa.Date(), nullable=True),
    sa.Column('WhoId', sa.String(length=18), nullable=True),
    sa.Column('WhatId', sa.String(length=18), nullable=True),
    sa.Column('CreatedDate', sa.DateTime(timezone=True), nullable=False),
    sa.Column('LastModifiedDate', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('Id')
    )
    with op.batch_alter_table('crm_task', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_crm_task_CallObject'), ['CallObject'], unique=False)
        batch_op.create_index(batch_op.f('ix_crm_task_WhatId'), ['WhatId'], unique=False)
        batch_op.create_index(batch_op.f('ix_crm_task_WhoId'), ['WhoId'], unique=False)

    op.create_table('events',
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('body_hash', sa.String(length=64), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('chat_id', sa.String(length=200), nullable=True),
    sa.Column('call_id', sa.String(length=200), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('response_status', sa.Integer(), nullable=False),
    sa.Column('response_body', sa.JSON(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_events_call_id'), ['call_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_chat_id'), ['chat_id'], unique=False)

    op.create_table('job_runs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job', sa.String(length=64), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('skipped', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('job_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_runs_job'), ['job'], unique=False)

    op.create_table('job_schedule',
    sa.Column('job', sa.String(length=64), nullable=False),
    sa.Column('next_run_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('interval_seconds', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('job')
    )
    op.create_table('leases',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=128), nullable=False),
    sa.Column('until', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('outbox',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claimed_by', sa.String(length=128), nullable=True),
    sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_kind_key', ['kind', 'key'], unique=False)
        batch_op.create_index('ix_outbox_status_due', ['status', 'due_at'], unique=False)

    op.create_table('agent_tokens',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('agent_id', sa.Integer(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ),
    sa.PrimaryKeyConstraint('token_hash')
    )


def downgrade() -> None:
    op.drop_table('agent_tokens')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_status_due')
        batch_op.drop_index('ix_outbox_kind_key')

    op.drop_table('outbox')
    op.drop_table('leases')
    op.drop_table('job_schedule')
    with op.batch_alter_table('job_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_runs_job'))

    op.drop_table('job_runs')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_chat_id'))
        batch_op.drop_index(batch_op.f('ix_events_call_id'))

    op.drop_table('events')
    with op.batch_alter_table('crm_task', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_crm_task_WhoId'))
        batch_op.drop_index(batch_op.f('ix_crm_task_WhatId'))
        batch_op.drop_index(batch_op.f('ix_crm_task_CallObject'))

    op.drop_table('crm_task')
    with op.batch_alter_table('crm_phone_index', schema=None) as batch_op:
        batch_op.drop_index('ix_crm_phone_index_e164')

    op.drop_table('crm_phone_index')
    op.drop_table('crm_lead')
    with op.batch_alter_table('crm_contentversion', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_crm_contentversion_FirstPublishLocationId'))

    op.drop_table('crm_contentversion')
    with op.batch_alter_table('crm_contact', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_crm_contact_AccountId'))

    op.drop_table('crm_contact')
    with op.batch_alter_table('crm_case', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_crm_case_Subject'))
        batch_op.drop_index(batch_op.f('ix_crm_case_ContactId'))
        batch_op.drop_index(batch_op.f('ix_crm_case_AccountId'))

    op.drop_table('crm_case')
    op.drop_table('crm_blobs')
    op.drop_table('crm_account')
    with op.batch_alter_table('console_events', schema=None) as batch_op:
        batch_op.drop_index('ix_console_events_agent_id')

    op.drop_table('console_events')
    with op.batch_alter_table('chats', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chats_consumer_number'))
        batch_op.drop_index(batch_op.f('ix_chats_agent_id'))
        batch_op.drop_index(batch_op.f('ix_chats_agent_email'))

    op.drop_table('chats')
    with op.batch_alter_table('chat_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_chat_messages_chat_sent')

    op.drop_table('chat_messages')
    op.drop_table('chat_media')
    with op.batch_alter_table('chat_activity', schema=None) as batch_op:
        batch_op.drop_index('ix_chat_activity_chat_at')

    op.drop_table('chat_activity')
    op.drop_table('app_settings')
    op.drop_table('agents')
    with op.batch_alter_table('abandoned_calls', schema=None) as batch_op:
        batch_op.drop_index('ix_abandoned_status')

    op.drop_table('abandoned_calls')
