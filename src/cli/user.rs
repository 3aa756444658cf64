//! `edgeauth user ...`: account administration from the command line.

use super::*;

pub(super) fn user(config: &Config, cmd: UserCommand) -> Result<(), AppError> {
    match cmd {
        UserCommand::Add {
            user,
            roles,
            groups,
            local,
            password_stdin,
            email,
            first_name,
            last_name,
        } => {
            let password = read_password(password_stdin, true)?;
            let v = admin(
                config,
                AdminRequest::UserAdd {
                    tenant: user.tenant,
                    username: user.name,
                    roles,
                    groups,
                    local,
                    password,
                    profile: crate::keycloak::admin::Profile {
                        email,
                        first_name,
                        last_name,
                    },
                },
            )?;
            outln!(
                "added {}@{} ({})",
                str_of(&v["username"]),
                str_of(&v["tenant"]),
                str_of(&v["source"])
            );
        }
        UserCommand::List { tenant, json } => {
            let v = admin(config, AdminRequest::UserList { tenant })?;
            if json {
                print_json(&v);
            } else {
                outln!(
                    "{:<24} {:<12} {:<9} {:<8} ROLES",
                    "USERNAME",
                    "TENANT",
                    "SOURCE",
                    "ENABLED"
                );
                for u in v.as_array().into_iter().flatten() {
                    outln!(
                        "{:<24} {:<12} {:<9} {:<8} {}",
                        str_of(&u["username"]),
                        str_of(&u["tenant"]),
                        str_of(&u["source"]),
                        if u["enabled"].as_bool() == Some(true) {
                            "yes"
                        } else {
                            "no"
                        },
                        join(&u["roles"])
                    );
                }
            }
        }
        UserCommand::Show { user, json } => {
            let v = admin(
                config,
                AdminRequest::UserShow {
                    tenant: user.tenant,
                    username: user.name,
                },
            )?;
            if json {
                print_json(&v);
            } else {
                outln!("username:         {}", str_of(&v["username"]));
                outln!("tenant:           {}", str_of(&v["tenant"]));
                outln!("source:           {}", str_of(&v["source"]));
                outln!("enabled:          {}", v["enabled"]);
                outln!("roles:            {}", join(&v["roles"]));
                outln!("groups:           {}", join(&v["groups"]));
                outln!(
                    "created:          {}",
                    v["created_at"].as_u64().map(rfc3339).unwrap_or_default()
                );
                outln!(
                    "updated:          {}",
                    v["updated_at"].as_u64().map(rfc3339).unwrap_or_default()
                );
                outln!(
                    "last online auth: {}",
                    v["last_online_auth"]
                        .as_u64()
                        .map(rfc3339)
                        .unwrap_or_else(|| "never".into())
                );
            }
        }
        UserCommand::Disable(u) => {
            let v = admin(
                config,
                AdminRequest::UserSetEnabled {
                    tenant: u.tenant.clone(),
                    username: u.name.clone(),
                    enabled: false,
                },
            )?;
            outln!(
                "disabled {}@{}; {} sessions ended",
                u.name,
                u.tenant,
                v["revoked_sessions"]
            );
        }
        UserCommand::Enable(u) => {
            admin(
                config,
                AdminRequest::UserSetEnabled {
                    tenant: u.tenant.clone(),
                    username: u.name.clone(),
                    enabled: true,
                },
            )?;
            outln!("enabled {}@{}", u.name, u.tenant);
        }
        UserCommand::Remove(u) => {
            let v = admin(
                config,
                AdminRequest::UserRemove {
                    tenant: u.tenant.clone(),
                    username: u.name.clone(),
                },
            )?;
            outln!(
                "removed {}@{}; {} sessions deleted",
                u.name,
                u.tenant,
                v["deleted_sessions"]
            );
        }
        UserCommand::Group(g) => {
            let (name, group, tenant, join) = match g {
                GroupCommand::Add {
                    name,
                    group,
                    tenant,
                } => (name, group, tenant, true),
                GroupCommand::Remove {
                    name,
                    group,
                    tenant,
                } => (name, group, tenant, false),
            };
            let v = admin(
                config,
                AdminRequest::UserGroup {
                    tenant: tenant.clone(),
                    username: name.clone(),
                    group,
                    join,
                },
            )?;
            outln!("{name}@{tenant} groups: {}", self::join(&v["groups"]));
        }
        UserCommand::Passwd {
            user,
            password_stdin,
        } => {
            let password = read_password(password_stdin, true)?;
            let v = admin(
                config,
                AdminRequest::UserPasswd {
                    tenant: user.tenant.clone(),
                    username: user.name.clone(),
                    password,
                },
            )?;
            outln!(
                "password set for {}@{}; {} sessions ended",
                user.name,
                user.tenant,
                v["revoked_sessions"]
            );
        }
    }
    Ok(())
}
