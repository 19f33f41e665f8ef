/* credits--1.0--1.1.sql: from 1.0 (git tag v1.0) to 1.1.
 *
 * CREATE EXTENSION credits runs credits--1.0.sql and then this script, so a
 * fresh install and ALTER EXTENSION credits UPDATE run the same statements.
 * Sections are grouped by concern, each saying what it changes and why.
 */

\echo Use "ALTER EXTENSION credits UPDATE TO '1.1'" to load this file. \quit
