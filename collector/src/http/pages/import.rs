//! The import page (admin): upload one personnel CSV; stored whole through the same
//! [`import_csv`](crate::http::api::import_csv) call as `POST /api/v1/import/{kind}`, or every invalid
//! row listed.

use crate::http::api;
use crate::http::auth::{Admin, Principal};
use crate::http::error::{blocking, AppError, PageError};
use crate::http::views::{nav, page_err, render, Nav};
use crate::http::AppState;
use crate::people::import::Kind as CsvKind;
use crate::query::{ImportOutcome, Params};
use askama::Template;
use axum::extract::{Multipart, OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

pub fn routes() -> Router<AppState> {
    Router::new().route("/import", get(import_form).post(import_post))
}

pub struct KindInfo {
    pub name: &'static str,
    pub required: String,
    pub optional: String,
    pub on: bool,
}

pub struct RowError {
    pub file: String,
    pub line: u64,
    pub column: String,
    pub message: String,
}

#[derive(Template)]
#[template(path = "import.html")]
struct ImportPage {
    title: String,
    nav: Nav,
    csrf: String,
    kinds: Vec<KindInfo>,
    result: Option<String>,
    problem: Option<String>,
    errors: Vec<RowError>,
}

fn import_page(st: &AppState, p: &Principal, chosen: Option<CsvKind>) -> ImportPage {
    ImportPage {
        title: "Import personnel data".into(),
        nav: nav(st, p, "/import", &Params::default()),
        csrf: st.auth.csrf_token(p),
        kinds: CsvKind::ALL
            .iter()
            .map(|k| {
                let (req, opt) = k.columns();
                KindInfo { name: k.name(), required: req.join(", "), optional: opt.join(", "), on: Some(*k) == chosen }
            })
            .collect(),
        result: None,
        problem: None,
        errors: Vec::new(),
    }
}

async fn import_form(State(st): State<AppState>, Admin(p): Admin, uri: OriginalUri) -> Result<Response, PageError> {
    render(&import_page(&st, &p, None), StatusCode::OK).map_err(page_err(&uri))
}

async fn import_post(
    State(st): State<AppState>,
    Admin(p): Admin,
    uri: OriginalUri,
    headers: HeaderMap,
    mut form: Multipart,
) -> Result<Response, PageError> {
    let err = page_err(&uri);
    let (mut csrf, mut kind, mut file, mut text) = (String::new(), String::new(), String::new(), None);
    while let Some(field) =
        form.next_field().await.map_err(|e| err(AppError::bad_request(format!("unreadable upload: {e}"))))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let fname = field.file_name().map(str::to_string);
        let bytes = field.bytes().await.map_err(|e| err(AppError::bad_request(format!("unreadable upload: {e}"))))?;
        match name.as_str() {
            "csrf" => csrf = String::from_utf8_lossy(&bytes).into_owned(),
            "kind" => kind = String::from_utf8_lossy(&bytes).into_owned(),
            "file" => {
                file = fname.filter(|f| !f.is_empty()).unwrap_or_else(|| "upload.csv".into());
                text = Some(bytes);
            }
            _ => {}
        }
    }
    st.auth.check_form(&p, &headers, &csrf).map_err(&err)?;
    let kind = api::csv_kind(&kind).map_err(&err)?;
    let mut page = import_page(&st, &p, Some(kind));
    let Some(bytes) = text.filter(|b| !b.is_empty()) else {
        page.problem = Some("choose a CSV file to import".into());
        return render(&page, StatusCode::BAD_REQUEST).map_err(&err);
    };
    let Ok(text) = String::from_utf8(bytes.to_vec()) else {
        page.problem = Some(format!("{file} is not UTF-8 text; export the CSV as UTF-8"));
        return render(&page, StatusCode::UNPROCESSABLE_ENTITY).map_err(&err);
    };
    let source = st.data.clone();
    let fname = file.clone();
    let outcome = blocking(move || api::import_csv(&source, kind, &fname, &text)).await.map_err(&err)?;
    let status = match outcome {
        ImportOutcome::Stored(s) => {
            page.result = Some(s);
            StatusCode::OK
        }
        ImportOutcome::Rejected(errors) => {
            page.problem = Some(format!("{file}: {} invalid row(s); nothing was imported", errors.len()));
            page.errors = errors
                .into_iter()
                .map(|e| RowError { file: e.file, line: e.line, column: e.column, message: e.message })
                .collect();
            StatusCode::UNPROCESSABLE_ENTITY
        }
    };
    render(&page, status).map_err(&err)
}
