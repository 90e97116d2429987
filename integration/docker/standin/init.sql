-- Roles and databases of the RDS stand-in, run once by entrypoint.sh as postgres.
--
-- IAM users are members of rds_iam, which pg_hba.conf sends through PAM, as on RDS.
-- The password users cover each of Postgres's own password methods.

CREATE ROLE rds_iam;
CREATE ROLE iam_user LOGIN;
CREATE ROLE app_reader LOGIN;
CREATE ROLE "iam+user@corp.example" LOGIN;
GRANT rds_iam TO iam_user, app_reader, "iam+user@corp.example";

SET password_encryption = 'scram-sha-256';
CREATE ROLE scram_user LOGIN PASSWORD 'scram-secret';
CREATE ROLE password_user LOGIN PASSWORD 'clear-secret';
SET password_encryption = 'md5';
CREATE ROLE md5_user LOGIN PASSWORD 'md5-secret';
RESET password_encryption;

CREATE DATABASE app OWNER iam_user;
CREATE DATABASE demo OWNER iam_user;
GRANT CONNECT, CREATE, TEMPORARY ON DATABASE app, demo, postgres TO rds_iam;

-- Since Postgres 15 only the database owner may create in public: let every IAM user.
GRANT ALL ON SCHEMA public TO rds_iam;

\connect app
GRANT ALL ON SCHEMA public TO rds_iam;

\connect demo
GRANT ALL ON SCHEMA public TO rds_iam;
CREATE TABLE public.greetings (
    id integer PRIMARY KEY,
    lang text NOT NULL,
    greeting text NOT NULL
);
INSERT INTO public.greetings VALUES
    (1, 'en', 'hello'),
    (2, 'fr', 'bonjour'),
    (3, 'de', 'hallo'),
    (4, 'ja', 'こんにちは');
ALTER TABLE public.greetings OWNER TO iam_user;
GRANT SELECT ON public.greetings TO rds_iam;
